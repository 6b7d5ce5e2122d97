#!/usr/bin/env python
"""Sentiment with noisy labels and a small clean set: plain training vs gradient-guided loss masking.

Rotten-tomatoes reviews (embedded, real) get symmetric label noise at ``--noise_rate`` (default 40%: that
share of the training examples, drawn at random, gets a label drawn uniformly from the *other* classes). A
``--clean_size``-example subset held apart from the noisy pool keeps its true labels. The same MiniLM
classifier (same seed, same initial weights) is trained by each method in ``--methods``:

* ``baseline``  — the noisy set only, no masking;
* ``example``   — ``loss_masking="example"``: noisy examples whose gradient points against the clean gradient
  are dropped from the loss (one JVP per batch);
* ``batch``     — ``loss_masking="batch"``: noisy loss main, clean loss an auxiliary that must not rise;
* ``noisy_plus_clean`` and ``clean_only`` (optional) — plain training on noisy ∪ clean, or on the clean set.

Accuracy on the embedded validation split (500 reviews, never trained on) is reported for each. Since the
recipe knows which examples it corrupted, ``noise_report.json`` gives how often corrupted and intact examples
were masked (``masked_rate_corrupted``, ``masked_rate_intact``; example mode) next to ``metrics.json``.

    python recipes/noisy_labels.py                                   # defaults: 9 minutes on 2 cores (3 trainings)
    python recipes/noisy_labels.py --noise_rate 0.2 --max_steps 300 --output_dir outputs/noise20
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml recipes/noisy_labels.py --use_cpu True
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import pandas as pd
import transformers
from transformers import AutoTokenizer, set_seed

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtl.data import tokenize_task_dataset
from hf_mtl.data.embedded import embedded_encoder_path, load_rotten_tomatoes
from hf_mtl.masking import MaskingTally
from hf_mtl.recipes.arguments import parse_with_defaults
from hf_mtl.recipes.noisy_data import (
    MethodRuns,
    check_clean_size,
    format_value,
    parse_methods,
    train_and_report,
    write_outputs,
)
from hf_mtl.steps.trainer import end_distributed_run

logger = logging.getLogger(__name__)

METHODS = ("baseline", "example", "batch", "noisy_plus_clean", "clean_only")
MASKING_MODE = {"example": "example", "batch": "batch"}


@dataclass
class NoisyLabelsArguments:
    noise_rate: float = field(default=0.4, metadata={"help": "Share of noisy-pool examples whose label is replaced "
                                                             "by another class (symmetric noise)."})
    clean_size: int = field(default=300, metadata={"help": "Trusted examples held apart, labels intact."})
    max_train_samples: int | None = field(default=2000, metadata={"help": "Size of the noisy pool (None: all)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap the 500-review test split."})
    max_seq_length: int = field(default=64)
    methods: str = field(default="baseline,example,batch",
                         metadata={"help": f"Comma-separated, from {', '.join(METHODS)}."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Encoder; default: the embedded MiniLM."})

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise_rate < 1.0:
            raise ValueError(f"noise_rate must lie in [0, 1), got {self.noise_rate}.")
        check_clean_size(self.clean_size)
        self.method_list = parse_methods(self.methods, METHODS)


DEFAULTS = {
    "output_dir": "outputs/noisy_labels",
    "max_steps": 150,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "learning_rate": 1e-4,
    "warmup_steps": 15,
    "weight_decay": 0.01,
    "logging_steps": 25,
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": "none",
    "seed": 42,
    "masking_clean_batch_size": 16,
}


def parse_args(argv: list[str]) -> tuple[NoisyLabelsArguments, MultiTaskTrainingArguments]:
    return parse_with_defaults((NoisyLabelsArguments, MultiTaskTrainingArguments), DEFAULTS, argv, description=__doc__)


def corrupt_labels(labels: np.ndarray, num_labels: int, rate: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric noise: ``round(rate·n)`` examples, drawn without replacement, get a uniformly random other class."""
    corrupted = np.zeros(len(labels), dtype=bool)
    corrupted[rng.choice(len(labels), size=round(rate * len(labels)), replace=False)] = True
    shift = rng.integers(1, num_labels, size=len(labels))
    noisy = np.where(corrupted, (labels + shift) % num_labels, labels)
    return noisy, corrupted


def build_data(args: NoisyLabelsArguments, seed: int) -> tuple[Any, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    splits = load_rotten_tomatoes()
    task = splits.tasks[0]
    rng = np.random.default_rng(seed)
    pool = splits.train.iloc[rng.permutation(len(splits.train))].reset_index(drop=True)
    if args.clean_size >= len(pool):
        raise ValueError(f"clean_size={args.clean_size} leaves no noisy examples out of {len(pool)}.")
    clean = pool.iloc[: args.clean_size].reset_index(drop=True)
    noisy = pool.iloc[args.clean_size:].reset_index(drop=True)
    if args.max_train_samples is not None:
        noisy = noisy.iloc[: args.max_train_samples].reset_index(drop=True)
    labels, corrupted = corrupt_labels(noisy["label"].to_numpy(), task.num_labels, args.noise_rate, rng)
    noisy = noisy.assign(true_label=noisy["label"], label=labels, corrupted=corrupted)
    test = splits.validation
    if args.max_eval_samples is not None:
        test = test.iloc[: args.max_eval_samples]
    return task, noisy, clean, test


def tokenize(task: Any, frame: pd.DataFrame, tokenizer: Any, max_length: int) -> datasets.Dataset:
    return tokenize_task_dataset(task, datasets.Dataset.from_pandas(frame[["text", "label"]], preserve_index=False),
                                 tokenizer, max_length)


class LabelAgreement:
    """Observer: per micro-batch, how well the noisy label alone explains the mask.

    ``max(P(keep = [label = c]))`` over the classes ``c`` of a binary task: 1.0 when the mask keeps exactly
    one class, about 0.5 when it is independent of the label. Masks that follow the class instead of the
    corruption show up here even when they average out over the run. Counts this process's micro-batches only.
    """

    def __init__(self, task_name: str) -> None:
        self.task_name = task_name
        self.values: list[float] = []

    def __call__(self, batch: dict[str, Any], record: Any) -> None:
        labels = batch["task_batches"][self.task_name]["labels"].cpu()
        keep = record.keep
        self.values.append(max(float((keep == (labels == c)).float().mean()) for c in labels.unique().tolist())
                           if labels.unique().numel() == 2 else float("nan"))

    def mean(self) -> float | None:
        values = [v for v in self.values if v == v]
        return float(np.mean(values)) if values else None


def train_one(method: str, args: NoisyLabelsArguments, run_args: MultiTaskTrainingArguments, task: Any,
              encoder: str, tokenizer: Any, data: dict[str, datasets.Dataset], tally: MaskingTally,
              resume: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    mode = run_args.loss_masking
    set_seed(run_args.seed)
    model = MultiTaskModel.from_encoder(encoder, [task], tokenizer=tokenizer)
    train = {"noisy_plus_clean": datasets.concatenate_datasets([data["noisy"], data["clean"]]),
             "clean_only": data["clean"]}.get(method, data["noisy"])
    trainer = MultiTaskTrainer(model, run_args, train_dataset={task.name: train},
                               eval_dataset={task.name: data["test"]},
                               clean_dataset={task.name: data["clean"]} if mode != "none" else None,
                               processing_class=tokenizer)
    agreement = LabelAgreement(task.name)
    wall, report = train_and_report(trainer, mode, tally, agreement, resume=resume)
    evaluation = trainer.evaluate()
    result = {"accuracy": evaluation[f"eval_{task.name}_accuracy"], "macro_f1": evaluation[f"eval_{task.name}_macro_f1"],
              "train_wall_time_s": round(wall, 1)}
    if mode == "example":
        report["mask_label_agreement"] = agreement.mean()
    return result, report


def results_table(metrics: dict[str, dict[str, Any]], reports: dict[str, dict[str, Any]], seed: int,
                  noise_rate: float) -> str:
    lines = ["| method | seed | noise rate | accuracy | masked_rate_corrupted | masked_rate_intact | train wall s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for method, result in metrics.items():
        report = reports[method]
        lines.append(f"| {method} | {seed} | {noise_rate:.2f} | {result['accuracy']:.4f} | "
                     f"{format_value(report.get('masked_rate_corrupted'))} | {format_value(report.get('masked_rate_intact'))} | "
                     f"{result['train_wall_time_s']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    runs = MethodRuns(training_args, {method: MASKING_MODE.get(method, "none") for method in args.method_list})
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    datasets.disable_progress_bars()
    encoder = args.model_name_or_path or embedded_encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    task, noisy, clean, test = build_data(args, training_args.seed)
    data = {"noisy": tokenize(task, noisy, tokenizer, args.max_seq_length),
            "clean": tokenize(task, clean, tokenizer, args.max_seq_length),
            "test": tokenize(task, test, tokenizer, args.max_seq_length)}
    metrics: dict[str, dict[str, Any]] = {}
    reports: dict[str, dict[str, Any]] = {}
    for method in args.method_list:  # each method's results are written as soon as it finishes
        done = runs.finished(method)
        if done is None:
            tally = MaskingTally.from_dataset(data["noisy"], np.where(noisy["corrupted"], "flipped", "intact"))
            done = train_one(method, args, runs.training_args(method), task, encoder, tokenizer, data, tally,
                             resume=runs.resume_point(method))
            runs.save(method, *done)
        metrics[method], reports[method] = done
        logger.info("%s: %s %s", method, metrics[method], reports[method])
        noise = {"seed": training_args.seed, "noise_rate": args.noise_rate, "noise": "symmetric label noise",
                 "noisy_examples": len(noisy), "corrupted_examples": int(noisy["corrupted"].sum()),
                 "clean_examples": len(clean), "test_examples": len(test), "max_steps": training_args.max_steps,
                 "methods": reports}
        table = results_table(metrics, reports, training_args.seed, args.noise_rate)
        if training_args.process_index == 0:
            write_outputs(training_args.output_dir, metrics, noise, table)
    end_distributed_run()  # each method's Trainer is finished: the process group ends before exit
    return metrics


if __name__ == "__main__":
    main()
