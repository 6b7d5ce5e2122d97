"""What the noisy-data recipes (``recipes/noisy_labels.py``, ``recipes/noisy_nmt.py``) share: the method list,
the run-level masking report and the files they write next to each other."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hf_mtl.masking import MaskingTally


def parse_methods(methods: str, allowed: Sequence[str]) -> list[str]:
    """``"baseline, example"`` → ``["baseline", "example"]``; an empty list or an unknown name is an error."""
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in allowed]
    if unknown or not chosen:
        raise ValueError(f"Unknown method(s) {unknown} in --methods {methods!r}; choose from {tuple(allowed)}.")
    return chosen


def check_clean_size(clean_size: int) -> None:
    if clean_size < 1:
        raise ValueError(f"clean_size must be ≥ 1 (the masking modes need a clean set), got {clean_size}.")


def masking_report(mode: str, log_history: Sequence[Mapping[str, Any]], tally: MaskingTally) -> dict[str, Any]:
    """What one run's masking did, for ``noise_report.json``.

    Example mode: the tally's masked rates per kind of noise (summed over ranks) and the mean logged
    ``masked_fraction``; batch mode: the mean ``λ`` and the share of steps on which the constraint was active.
    Rates a mode does not have are ``None``.
    """
    report: dict[str, Any] = {"loss_masking": mode, "masked_rate_corrupted": None, "masked_rate_intact": None}

    def mean_of(key: str) -> float | None:
        values = [entry[key] for entry in log_history if key in entry]
        return float(np.mean(values)) if values else None

    if mode == "example":
        tally.all_reduce()
        report.update(tally.report())
        report["mean_logged_masked_fraction"] = mean_of("masked_fraction")
    elif mode == "batch":
        report["mean_lambda"] = mean_of("masking_lambda")
        report["constrained_step_fraction"] = mean_of("masking_active_fraction")
    return report


def train_and_report(trainer: Any, mode: str, tally: MaskingTally, *observers: Callable[..., None]
                     ) -> tuple[float, dict[str, Any]]:
    """Train (in example mode with ``tally`` and ``observers`` watching every mask); return the training wall
    time in seconds and :func:`masking_report`."""
    if mode == "example":
        for observer in (tally, *observers):
            trainer.add_masking_observer(observer)
    start = time.time()
    trainer.train()
    wall = time.time() - start
    return wall, masking_report(mode, trainer.state.log_history, tally)


def format_value(value: float | None) -> str:
    """Three decimals, or an en dash for a value the method does not have."""
    return "–" if value is None else f"{value:.3f}"


def write_outputs(output_dir: str, metrics: Mapping[str, Any], noise_report: Mapping[str, Any], table: str) -> None:
    """``metrics.json``, ``noise_report.json`` and ``results.md`` (the table, also printed); main process only."""
    os.makedirs(output_dir, exist_ok=True)
    for name, content in (("metrics.json", metrics), ("noise_report.json", noise_report)):
        with open(os.path.join(output_dir, name), "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=1)
    with open(os.path.join(output_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    print(table)
