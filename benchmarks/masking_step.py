#!/usr/bin/env python
"""Cost of a loss-masking step against a plain ``Trainer`` step on the same model and batch.

Two real workloads on the embedded MiniLM: sentence classification (``MultiTaskModel``, rotten-tomatoes
reviews) and seq2seq (``EncoderDecoderModel`` warm-started from MiniLM on both sides, King James → Basic
English verses). Each training step (forward, backward, masking; not the optimizer step, the same for all) is
timed interleaved with a plain ``Trainer.training_step`` so that the ratio holds on a busy machine:

* ``plain``            — ``transformers.Trainer.training_step`` (the reference, ratio 1.0);
* ``example``          — example masking with a cached ``g_clean``: one JVP forward (primal kept for the
  backward), the keep rule, one backward of the masked loss;
* ``example_top``      — the same with ``masking_parameters`` restricted to the top of the network (last
  encoder layer and head / last decoder layer and LM-head transform), so tangents start high up;
* ``batch``            — primary/auxiliary with a cached ``g_clean``: plain backward, 2×2 Gram, ``λ g_clean``;
* ``example_refresh`` / ``batch_refresh`` — the same steps when ``g_clean`` is recomputed at this step
  (a clean batch of the same size: one more forward + backward).

The ``amortised_10`` rows give the cost per step when ``g_clean`` is refreshed every 10 steps:
``t(mode) + (t(mode_refresh) - t(mode)) / 10`` (for ``example_top`` with the full refresh cost, an upper bound).
Ratios are medians over interleaved repeats, by wall time and by this process's CPU time; on a machine
shared with other jobs the CPU-time ratio is the steadier of the two.

    python benchmarks/masking_step.py --quick                 # classification only, small batch, ~2 min
    python benchmarks/masking_step.py --json results.json     # both workloads
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import datasets
import torch
from transformers import AutoTokenizer, EncoderDecoderModel, Trainer, TrainingArguments

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task
from hf_mtl.data.embedded import embedded_encoder_path, load_rotten_tomatoes, read_bible_verses
from hf_mtl.masking import LossMaskingTrainer, LossMaskingTrainingArguments

TOP_LAYERS = {
    "classification": r"^encoder\.encoder\.layer\.5\.|^heads\.",
    "seq2seq": r"^decoder\.bert\.encoder\.layer\.5\.|^decoder\.cls\.",
}
NEVER = 10**9  # refresh period that never comes round after the first step
CLOCKS = ("wall", "cpu")  # wall time, and this process's CPU time (less sensitive to other processes)


def classification_data(tokenizer: Any, batch_size: int, seq_len: int) -> datasets.Dataset:
    frame = load_rotten_tomatoes().train.iloc[: 2 * batch_size]
    encoded = tokenizer(list(frame["text"]), padding="max_length", truncation=True, max_length=seq_len)
    return datasets.Dataset.from_dict({**encoded, "labels": frame["label"].tolist()})


def seq2seq_data(tokenizer: Any, batch_size: int, seq_len: int) -> datasets.Dataset:
    verses = read_bible_verses().iloc[: 2 * batch_size]
    encoded = tokenizer(list(verses["source"]), padding="max_length", truncation=True, max_length=seq_len)
    targets = tokenizer(list(verses["paraphrase"]), padding="max_length", truncation=True, max_length=seq_len)
    labels = [[t if m else -100 for t, m in zip(ids, mask, strict=True)]
              for ids, mask in zip(targets["input_ids"], targets["attention_mask"], strict=True)]
    return datasets.Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                                       "labels": labels})


class Bench:
    """One model, one batch; a plain trainer and one masking trainer per timed method, all sharing the model."""

    def __init__(self, workload: str, batch_size: int, seq_len: int, output_dir: str) -> None:
        encoder = embedded_encoder_path()
        tokenizer = AutoTokenizer.from_pretrained(encoder)
        torch.manual_seed(0)
        common = dict(output_dir=output_dir, report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                      per_device_train_batch_size=batch_size)
        if workload == "classification":
            data = classification_data(tokenizer, batch_size, seq_len)
            task = Task("rotten_tomatoes", num_labels=2)
            self.model = MultiTaskModel.from_encoder(encoder, [task])
            train = {task.name: data.select(range(batch_size))}
            clean = {task.name: data.select(range(batch_size, 2 * batch_size))}
            self.plain = MultiTaskTrainer(self.model, MultiTaskTrainingArguments(**common), train_dataset=train,
                                          processing_class=tokenizer)

            def masking(**options: Any) -> Trainer:
                return MultiTaskTrainer(self.model, MultiTaskTrainingArguments(**common, **options),
                                        train_dataset=train, clean_dataset=clean, processing_class=tokenizer)
        else:
            data = seq2seq_data(tokenizer, batch_size, seq_len)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model = EncoderDecoderModel.from_encoder_decoder_pretrained(encoder, encoder)
            for config in (self.model.config, self.model.generation_config):
                config.decoder_start_token_id = tokenizer.cls_token_id
                config.pad_token_id = tokenizer.pad_token_id
                config.eos_token_id = tokenizer.sep_token_id
            self.model.accepts_loss_kwargs = False  # its loss is a token mean; see docs/masking.md
            train, clean = data.select(range(batch_size)), data.select(range(batch_size, 2 * batch_size))
            self.plain = Trainer(self.model, TrainingArguments(**common), train_dataset=train)

            def masking(**options: Any) -> Trainer:
                return LossMaskingTrainer(model=self.model, args=LossMaskingTrainingArguments(**common, **options),
                                          train_dataset=train, clean_dataset=clean)
        self.trainers: dict[str, Trainer] = {
            "plain": self.plain,
            "example": masking(loss_masking="example", masking_refresh_steps=NEVER),
            "example_top": masking(loss_masking="example", masking_refresh_steps=NEVER,
                                   masking_parameters=TOP_LAYERS[workload]),
            "batch": masking(loss_masking="batch", masking_refresh_steps=NEVER),
            "example_refresh": masking(loss_masking="example", masking_refresh_steps=1),
            "batch_refresh": masking(loss_masking="batch", masking_refresh_steps=1),
        }
        self.batch = self.plain._prepare_inputs(next(iter(self.plain.get_train_dataloader())))
        for name, trainer in self.trainers.items():
            trainer.current_gradient_accumulation_steps = 1
            if name != "plain":
                trainer.state.global_step = 0 if name.endswith("_refresh") else 1  # 1: after the first refresh

    def step(self, method: str) -> Callable[[], Any]:
        trainer = self.trainers[method]
        return lambda: trainer.training_step(self.model, self.batch)

    def run_once(self, method: str) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process) of one step."""
        fn = self.step(method)
        self.model.zero_grad(set_to_none=True)
        synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # EncoderDecoderModel's own loss (plain step)
            fn()
        synchronize()
        return time.perf_counter() - wall, time.process_time() - cpu


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_workload(workload: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    bench = Bench(workload, args.batch_size, args.seq_len, args.output_dir)
    methods = list(bench.trainers)
    for method in methods:  # warm-up (and the first refresh of the cached-g_clean trainers)
        bench.run_once(method)
    ratios = {clock: {m: [] for m in methods} for clock in CLOCKS}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.repeats):
        times = {m: bench.run_once(m) for m in methods}
        for m in methods:
            for index, clock in enumerate(CLOCKS):
                ratios[clock][m].append(times[m][index] / times["plain"][index])
            seconds[m].append(times[m][0])
    median = {clock: {m: statistics.median(ratios[clock][m]) for m in methods} for clock in CLOCKS}
    rows = [{"workload": workload, "mode": m, **{f"ratio_{c}": round(median[c][m], 3) for c in CLOCKS},
             "step_ms": round(1000 * statistics.median(seconds[m]), 1)} for m in methods]
    for mode in ("example", "example_top", "batch"):
        refresh = f"{mode.removesuffix('_top')}_refresh"
        extra = {c: median[c][refresh] - median[c][mode.removesuffix("_top")] for c in CLOCKS}
        rows.append({"workload": workload, "mode": f"{mode}_amortised_10",
                     **{f"ratio_{c}": round(median[c][mode] + extra[c] / 10, 3) for c in CLOCKS}, "step_ms": None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="classification only, batch 8 × 32, 3 repeats")
    parser.add_argument("--workloads", default="classification,seq2seq")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--output_dir", default=os.path.join("outputs", "bench_masking_step"))
    args = parser.parse_args()
    if args.quick:
        args.workloads, args.batch_size, args.seq_len, args.repeats = "classification", 8, 32, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for workload in args.workloads.split(","):
        workload_rows = time_workload(workload, args)
        rows.extend(workload_rows)
        for row in workload_rows:
            step = "" if row["step_ms"] is None else f"{row['step_ms']:>9.1f} ms"
            print(f"{row['workload']:>14} {row['mode']:<24} wall ratio {row['ratio_wall']:>6.3f}  cpu ratio "
                  f"{row['ratio_cpu']:>6.3f} {step}", flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"\nDevice: {device}; batch {args.batch_size} × {args.seq_len} tokens; median of {args.repeats} "
          "interleaved repeats.")
    print("| workload | mode | wall ratio vs plain | CPU-time ratio vs plain | step ms (wall) |\n"
          "| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['workload']} | {row['mode']} | {row['ratio_wall']:.3f} | {row['ratio_cpu']:.3f} | "
              f"{row['step_ms'] if row['step_ms'] is not None else '-'} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"device": device, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
                       "seq_len": args.seq_len, "repeats": args.repeats, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
