"""``benchmarks/noisy_labels_seeds.py``: finished configurations are not re-run, and the table is the sample
mean ± sd over seeds of what each run's ``metrics.json`` and ``noise_report.json`` say."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "noisy_labels_seeds.py"
spec = importlib.util.spec_from_file_location("noisy_labels_seeds", SCRIPT)
seeds = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seeds)


def write_run(root: Path, seed: int, accuracy: dict[str, float], masked: float | None) -> None:
    """What the recipe writes for every configuration of one seed."""
    for config, args in seeds.CONFIGS.items():
        directory = seeds.run_dir(root, seed, config)
        directory.mkdir(parents=True)
        methods = args[args.index("--methods") + 1].split(",")
        metrics = {m: {"accuracy": accuracy[m], "macro_f1": accuracy[m] - 0.01, "train_wall_time_s": 100.0 + seed}
                   for m in methods}
        report = {"methods": {m: {"masked_rate_corrupted": masked, "masked_rate_intact": 0.25,
                                  "mask_label_agreement": masked + 0.2}
                              for m in methods if m == "example" and masked is not None}}
        (directory / "metrics.json").write_text(json.dumps(metrics))
        (directory / "noise_report.json").write_text(json.dumps(report))


def test_table_is_mean_and_sample_sd_over_seeds(tmp_path, monkeypatch):
    names = ("baseline", "example", "batch", "noisy_plus_clean", "clean_only")
    write_run(tmp_path, 1, dict.fromkeys(names, 0.5), masked=0.4)
    write_run(tmp_path, 2, dict.fromkeys(names, 0.7), masked=0.6)
    monkeypatch.setattr(seeds.subprocess, "run", lambda *a, **k: pytest.fail(f"re-ran a finished seed: {a}"))
    for seed in (1, 2):
        for config in seeds.CONFIGS:
            seeds.run_config(tmp_path, seed, config)
    runs = {seed: seeds.collect(tmp_path, seed) for seed in (1, 2)}
    lines = seeds.table(runs).splitlines()
    assert len(lines) == 2 + len(seeds.ROWS)
    # accuracy 0.5 and 0.7: mean 0.6, sample sd 0.1414; masked 0.4/0.6 likewise; wall 101/102 s
    assert lines[2] == "| baseline (noisy only) | 0.600 ± 0.141 | 0.590 ± 0.141 | – | – | – | 102 ± 1 |", lines[2]
    assert lines[3] == ("| example masking | 0.600 ± 0.141 | 0.590 ± 0.141 | 0.500 ± 0.141 | 0.250 ± 0.000 | 0.70 ± 0.14 "
                        "| 102 ± 1 |"), lines[3]


def test_an_unfinished_configuration_is_run(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(seeds.subprocess, "run", lambda cmd, check: calls.append(cmd))
    seeds.run_config(tmp_path, 7, "balanced")
    assert len(calls) == 1
    assert calls[0][-6:] == ["--output_dir", str(seeds.run_dir(tmp_path, 7, "balanced")),
                             "--masking_balance_labels", "True", "--methods", "example"], calls[0]
    assert calls[0][2:4] == ["--seed", "7"], calls[0]
