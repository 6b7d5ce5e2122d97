#!/usr/bin/env python
"""The noisy-label table over several seeds: every row of ``recipes/noisy_labels.py`` in the README and docs/masking.md, mean ± sd.

Each row is one method of one recipe configuration. A configuration is run once per seed with
``python recipes/noisy_labels.py --seed S --output_dir ROOT/sS_CONFIG ARGS`` (skipped when its
``metrics.json`` already holds the methods: runs resume, and finished seeds are not repeated); the seed draws
the clean/noisy split, the label noise and the training order. The table gives the sample mean ± sd over the
seeds of test accuracy, macro F1, the masked rates over corrupted and intact examples and the fraction of
masking decisions that follow the example's label (``noise_report.json``), and the training wall time.

    python benchmarks/noisy_labels_seeds.py --seeds 42,43,44 --json benchmarks/results_noisy_labels_seeds.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "noisy_labels.py"
CONFIGS = {  # name: the recipe's arguments besides --seed and --output_dir
    "default": ["--methods", "baseline,example,batch"],
    "clean": ["--masking_train_on_clean", "True", "--methods", "example,batch"],
    "balanced": ["--masking_balance_labels", "True", "--methods", "example"],
    "balanced_clean": ["--masking_balance_labels", "True", "--masking_train_on_clean", "True", "--methods", "example"],
    "references": ["--methods", "noisy_plus_clean,clean_only"],
    "clean_batch_64": ["--masking_clean_batch_size", "64", "--methods", "example"],
}
ROWS = [  # (label, configuration, method)
    ("baseline (noisy only)", "default", "baseline"),
    ("example masking", "default", "example"),
    ("batch mode", "default", "batch"),
    ("example masking, clean batch of 64 (`--masking_clean_batch_size 64`)", "clean_batch_64", "example"),
    ("example masking + clean", "clean", "example"),
    ("example masking, label-balanced (`--masking_balance_labels True`)", "balanced", "example"),
    ("example masking, label-balanced + clean", "balanced_clean", "example"),
    ("batch mode + clean", "clean", "batch"),
    ("plain, noisy ∪ clean", "references", "noisy_plus_clean"),
    ("plain, clean only", "references", "clean_only"),
]
FIGURES = ("accuracy", "macro_f1", "masked_rate_corrupted", "masked_rate_intact", "mask_label_agreement",
           "train_wall_time_s")
DIGITS = {"mask_label_agreement": 2, "train_wall_time_s": 0}  # the others: 3


def run_dir(root: Path, seed: int, config: str) -> Path:
    return root / f"s{seed}_{config}"


def finished(directory: Path, methods: list[str]) -> bool:
    path = directory / "metrics.json"
    return path.exists() and all(m in json.loads(path.read_text()) for m in methods)


def run_config(root: Path, seed: int, config: str) -> None:
    directory = run_dir(root, seed, config)
    args = CONFIGS[config]
    if finished(directory, args[args.index("--methods") + 1].split(",")):
        print(f"[seeds] seed {seed} {config}: finished before, skipped", flush=True)
        return
    cmd = [sys.executable, str(RECIPE), "--seed", str(seed), "--output_dir", str(directory), *args]
    print(f"[seeds] {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True)


def collect(root: Path, seed: int) -> dict[str, dict[str, float | None]]:
    """Every row's figures for one seed."""
    out = {}
    for label, config, method in ROWS:
        directory = run_dir(root, seed, config)
        metrics = json.loads((directory / "metrics.json").read_text())[method]
        report = json.loads((directory / "noise_report.json").read_text())["methods"].get(method, {})
        out[label] = {name: metrics.get(name, report.get(name)) for name in FIGURES}
    return out


def mean_sd(values: list[float | None], digits: int) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    if len(present) == 1:
        return f"{present[0]:.{digits}f}"
    return f"{statistics.mean(present):.{digits}f} ± {statistics.stdev(present):.{digits}f}"


def table(runs: dict[int, dict[str, dict[str, float | None]]]) -> str:
    lines = ["| method | accuracy | macro F1 | masked_rate_corrupted | masked_rate_intact | mask/label agreement "
             "| train wall s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, _config, _method in ROWS:
        cells = [mean_sd([runs[s][label][name] for s in runs], DIGITS.get(name, 3)) for name in FIGURES]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--output_root", default=os.path.join("outputs", "noisy_labels_seeds"))
    parser.add_argument("--json", help="write the per-seed figures and the commands to this file")
    parser.add_argument("--machine", default=f"{platform.machine()} CPU, {os.cpu_count()} cores",
                        help="how the runs were made, recorded in the JSON")
    args = parser.parse_args()
    root, seeds = Path(args.output_root), [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        for config in CONFIGS:
            run_config(root, seed, config)
    runs = {seed: collect(root, seed) for seed in seeds}
    print(f"\nSeeds {seeds}: mean ± sample sd.\n{table(runs)}")
    if args.json:
        record = {"machine": args.machine, "seeds": seeds,
                  "commands": {name: f"python recipes/noisy_labels.py --seed S {' '.join(cmd)}"
                               for name, cmd in CONFIGS.items()},
                  "runs": {str(seed): rows for seed, rows in runs.items()}}
        Path(args.json).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
