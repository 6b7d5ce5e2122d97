"""What the noisy-data recipes (``recipes/noisy_labels.py``, ``recipes/noisy_nmt.py``) share: the method list,
the per-method runs (checked up front, saved as each finishes, resumable), the run-level masking report and
the files they write next to each other."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hf_mtl.checkpoints import last_complete_checkpoint, resume_argument
from hf_mtl.masking import MaskingTally
from hf_mtl.run_safety import previous_run

logger = logging.getLogger(__name__)

RESULT_FILE = "method_result.json"


def parse_methods(methods: str, allowed: Sequence[str]) -> list[str]:
    """``"baseline, example"`` → ``["baseline", "example"]``; an empty list or an unknown name is an error."""
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in allowed]
    if unknown or not chosen:
        raise ValueError(f"Unknown method(s) {unknown} in --methods {methods!r}; choose from {tuple(allowed)}.")
    return chosen


class MethodRuns:
    """The runs of a recipe's methods, one folder each (``output_dir/<method>``).

    Built before anything trains, it checks every method's training arguments (so a bad option fails at once,
    not after the first methods trained) and what is already in ``output_dir``: a fresh run (no
    ``--resume_from_checkpoint``) refuses folders holding a previous run unless ``--overwrite_output_dir True``.
    Each finished method's result is saved in its folder (:meth:`save`); with ``--resume_from_checkpoint True``
    finished methods are read back instead of trained again (:meth:`finished`), and an unfinished one resumes
    from its newest complete checkpoint, if any. An explicit checkpoint path must lie in one method's folder.
    """

    def __init__(self, training_args: Any, modes: Mapping[str, str]) -> None:
        self.output_dir = training_args.output_dir
        self.resume = resume_argument(training_args.resume_from_checkpoint)
        self.args: dict[str, Any] = {}
        for method, mode in modes.items():
            try:
                self.args[method] = dataclasses.replace(
                    training_args, loss_masking=mode, output_dir=os.path.join(self.output_dir, method),
                    resume_from_checkpoint=None)
            except ValueError as err:
                raise ValueError(f"Method {method!r} (loss_masking={mode!r}): {err}") from None
        if isinstance(self.resume, str):
            parent = os.path.dirname(os.path.normpath(self.resume))
            owners = [m for m, a in self.args.items() if os.path.normpath(a.output_dir) == os.path.normpath(parent)]
            if not os.path.isdir(self.resume) or not owners:
                raise ValueError(
                    f"--resume_from_checkpoint {self.resume!r}: expected an existing checkpoint folder of one method, "
                    f"{os.path.join(self.output_dir, '<method>', 'checkpoint-N')} with <method> in {list(modes)}; "
                    "or True to resume every unfinished method from its newest checkpoint."
                )
        elif self.resume is None:
            for method, args in self.args.items():
                found = previous_run(args.output_dir) + ([RESULT_FILE] if self._result_path(method) else [])
                if found and not args.overwrite_output_dir:
                    raise ValueError(
                        f"Output directory {args.output_dir} holds a previous run of method {method!r} "
                        f"({', '.join(found)}). Resume it with --resume_from_checkpoint True (finished methods are "
                        "kept), or start over with --overwrite_output_dir True, or choose another --output_dir."
                    )

    def _result_path(self, method: str) -> str | None:
        path = os.path.join(self.args[method].output_dir, RESULT_FILE)
        return path if os.path.isfile(path) else None

    def finished(self, method: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(result, report)`` of a method finished by an earlier run, when resuming; otherwise ``None``."""
        path = self._result_path(method) if self.resume is not None else None
        if path is None:
            return None
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
        logger.info("Method %r finished in an earlier run (%s): not trained again.", method, path)
        return saved["result"], saved["report"]

    def resume_point(self, method: str) -> str | None:
        """The checkpoint ``method`` resumes from: the explicit one in its folder, else (``True``) its newest
        complete checkpoint; ``None`` for a fresh start."""
        args = self.args[method]
        if isinstance(self.resume, str):
            inside = os.path.normpath(os.path.dirname(os.path.normpath(self.resume))) == os.path.normpath(args.output_dir)
            return self.resume if inside else None
        if self.resume is True:
            return last_complete_checkpoint(args.output_dir)
        return None

    def training_args(self, method: str) -> Any:
        """The method's checked arguments, called when it starts training; a resumed run restarts an unfinished
        method without a complete checkpoint over its leftovers."""
        args = self.args[method]
        stale = self._result_path(method)
        if stale is not None and args.process_index == 0:  # overwriting a finished method: its result goes too
            os.remove(stale)
        if self.resume is not None and self.resume_point(method) is None:
            args = dataclasses.replace(args, overwrite_output_dir=True)
        return args

    def save(self, method: str, result: Mapping[str, Any] | None, report: Mapping[str, Any]) -> None:
        """Keep a finished method's result and report in its folder (written by the main process only)."""
        if result is None or self.args[method].process_index != 0:
            return
        os.makedirs(self.args[method].output_dir, exist_ok=True)
        path = os.path.join(self.args[method].output_dir, RESULT_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump({"result": result, "report": report}, handle, indent=1)
        os.replace(path + ".tmp", path)


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


def train_and_report(trainer: Any, mode: str, tally: MaskingTally, *observers: Callable[..., None],
                     resume: str | None = None) -> tuple[float, dict[str, Any]]:
    """Train, from the checkpoint ``resume`` if given (in example mode with ``tally`` and ``observers`` watching
    every mask); return the training wall time in seconds and :func:`masking_report` (which counts the masks
    of this process's steps only: after a resume, those since the checkpoint)."""
    if mode == "example":
        for observer in (tally, *observers):
            trainer.add_masking_observer(observer)
    start = time.time()
    trainer.train(resume_from_checkpoint=resume)
    wall = time.time() - start
    report = masking_report(mode, trainer.state.log_history, tally)
    if resume is not None:
        report["resumed_from"] = resume
    return wall, report


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
