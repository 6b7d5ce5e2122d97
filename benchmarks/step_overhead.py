#!/usr/bin/env python
"""Step overhead of the gradient modes against a plain ``Trainer`` step, on the same model and batch.

For K = 2, 4, 8 tasks on the embedded MiniLM encoder, disjoint (a sub-batch per task) and shared-input
(every example labelled for every task) batches, each method's training step (forward, backward,
combination; not the optimizer step, which is the same for all) is timed interleaved with a plain
``transformers.Trainer.training_step`` on the summed loss, so the ratio is stable on a noisy machine:

* ``plain``            — ``transformers.Trainer.training_step`` (the reference, ratio 1.0);
* ``params``           — per-task gradients of the encoder, Gram, MGDA, combined ``.grad``;
* ``encoder_output``   — Gram of ``∂L_k/∂z``, MGDA, one backward of ``Σ w_k L_k``;
* ``autograd_floor``   — shared input only: one forward + K ``autograd.grad`` calls, nothing else;
* ``torchjd_mgda`` / ``torchjd_upgrad`` — TorchJD's ``mtl_backward`` + ``jac_to_grad`` on the same work.

Peak memory (MiB) is the peak resident set of a fresh process running that one method, minus the peak
of a process that only builds the model and batch (CPU), or ``torch.cuda.max_memory_allocated`` (GPU).

    python benchmarks/step_overhead.py --quick              # < 60 s on 2 cores
    python benchmarks/step_overhead.py --json results.json  # full table
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoTokenizer, Trainer, TrainingArguments

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task
from hf_mtl.data.embedded import embedded_encoder_path, load_rotten_tomatoes

METHODS = ("plain", "params", "encoder_output", "autograd_floor", "torchjd_mgda", "torchjd_upgrad")


def make_batch(tokenizer: Any, layout: str, num_tasks: int, batch_size: int, seq_len: int,
               device: torch.device) -> tuple[list[Task], dict[str, Any]]:
    texts = list(load_rotten_tomatoes().train["text"][: batch_size])
    generator = torch.Generator().manual_seed(0)
    tasks = [Task(f"task{k}", num_labels=3) for k in range(num_tasks)]

    def encode(chunk: list[str]) -> dict[str, torch.Tensor]:
        enc = tokenizer(chunk, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items()}

    if layout == "shared":
        labels = {t.name: torch.randint(0, 3, (batch_size,), generator=generator).to(device) for t in tasks}
        return tasks, {"inputs": encode(texts), "labels": labels}
    per_task = batch_size // num_tasks
    task_batches = {}
    for k, task in enumerate(tasks):
        sub = encode(texts[k * per_task:(k + 1) * per_task])
        sub["labels"] = torch.randint(0, 3, (per_task,), generator=generator).to(device)
        task_batches[task.name] = sub
    return tasks, {"task_batches": task_batches}


class Bench:
    """One model and batch; a step function per method, each leaving the summed-or-combined ``.grad``."""

    def __init__(self, layout: str, num_tasks: int, batch_size: int, seq_len: int, device: torch.device,
                 output_dir: str) -> None:
        encoder = embedded_encoder_path()
        tokenizer = AutoTokenizer.from_pretrained(encoder)
        self.tasks, self.batch = make_batch(tokenizer, layout, num_tasks, batch_size, seq_len, device)
        torch.manual_seed(0)
        self.model = MultiTaskModel.from_encoder(encoder, self.tasks).to(device)
        common = dict(output_dir=output_dir, report_to=[], use_cpu=device.type == "cpu", disable_tqdm=True,
                      per_device_train_batch_size=batch_size)
        self.plain = Trainer(self.model, TrainingArguments(**common))
        self.engines = {
            mode: MultiTaskTrainer(self.model, MultiTaskTrainingArguments(**common, combiner="mgda",
                                                                          gradient_mode=mode),
                                   processing_class=tokenizer)
            for mode in ("params", "encoder_output")
        }
        for trainer in [self.plain, *self.engines.values()]:
            trainer.current_gradient_accumulation_steps = 1
        self.layout = layout

    def step(self, method: str) -> Callable[[], None]:
        model = self.model
        if method == "plain":
            return lambda: self.plain.training_step(model, self.batch)
        if method in self.engines:
            return lambda: self.engines[method].training_step(model, self.batch)
        if method == "autograd_floor":
            return self._autograd_floor
        return lambda: self._torchjd(method.removeprefix("torchjd_"))

    def _losses_and_features(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        model = self.model
        if self.layout == "shared":
            inputs, labels = self.batch["inputs"], self.batch["labels"]
            z = model.encode(inputs)
            return [model.head_loss(t.name, z, model.task_batch(inputs, labels, t.name))[0] for t in self.tasks], [z]
        losses, features = [], []
        for t in self.tasks:
            sub = self.batch["task_batches"][t.name]
            z = model.encode(sub)
            features.append(z)
            losses.append(model.head_loss(t.name, z, sub)[0])
        return losses, features

    def _autograd_floor(self) -> None:
        model = self.model
        model.train()
        losses, _ = self._losses_and_features()
        shared = model.shared_parameters()
        for k, loss in enumerate(losses):
            torch.autograd.grad(loss, shared + model.task_specific_parameters(self.tasks[k].name),
                                retain_graph=k < len(losses) - 1, allow_unused=True)

    def _torchjd(self, aggregator_name: str) -> None:
        from torchjd.aggregation import MGDA, UPGrad
        from torchjd.autojac import jac_to_grad, mtl_backward

        model = self.model
        model.train()
        losses, features = self._losses_and_features()
        shared = model.shared_parameters()
        mtl_backward(losses, features=features, shared_params=shared,
                     tasks_params=[model.task_specific_parameters(t.name) for t in self.tasks])
        jac_to_grad([p for p in shared if getattr(p, "jac", None) is not None],
                    MGDA() if aggregator_name == "mgda" else UPGrad())

    def run_once(self, method: str) -> float:
        fn = self.step(method)
        self.model.zero_grad(set_to_none=True)
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        return time.perf_counter() - start


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def methods_for(layout: str, skip_torchjd: bool) -> list[str]:
    methods = [m for m in METHODS if layout == "shared" or m != "autograd_floor"]
    return [m for m in methods if not (skip_torchjd and m.startswith("torchjd_"))]


def time_config(layout: str, num_tasks: int, args: argparse.Namespace, device: torch.device) -> list[dict]:
    bench = Bench(layout, num_tasks, args.batch_size, args.seq_len, device, args.output_dir)
    methods = methods_for(layout, args.skip_torchjd)
    for method in methods:  # warm-up
        bench.run_once(method)
    ratios: dict[str, list[float]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.repeats):
        times = {m: bench.run_once(m) for m in methods}
        for m in methods:
            ratios[m].append(times[m] / times["plain"])
            seconds[m].append(times[m])
    rows = []
    for m in methods:
        rows.append({"mode": m, "layout": layout, "tasks": num_tasks,
                     "ratio_vs_plain": round(statistics.median(ratios[m]), 3),
                     "step_ms": round(1000 * statistics.median(seconds[m]), 1), "peak_mem_mb": None})
    return rows


def peak_memory(layout: str, num_tasks: int, method: str, args: argparse.Namespace) -> float:
    """Peak memory of one method in a fresh process, minus the set-up-only baseline (MiB)."""
    def measure(m: str) -> float:
        cmd = [sys.executable, __file__, "--_memory_probe", f"{layout},{num_tasks},{m}",
               "--batch_size", str(args.batch_size), "--seq_len", str(args.seq_len), "--output_dir", args.output_dir]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    return round(measure(method) - measure("setup"), 1)


def memory_probe(spec: str, args: argparse.Namespace, device: torch.device) -> None:
    layout, num_tasks, method = spec.split(",")
    bench = Bench(layout, int(num_tasks), args.batch_size, args.seq_len, device, args.output_dir)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    if method != "setup":
        for _ in range(2):
            bench.run_once(method)
    if device.type == "cuda":
        print((torch.cuda.max_memory_allocated() - base) / 2**20 if method != "setup" else 0.0)
    else:
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="K=2,4 only, fewer repeats, no memory probes")
    parser.add_argument("--tasks", default="2,4,8")
    parser.add_argument("--layouts", default="disjoint,shared")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip_torchjd", action="store_true")
    parser.add_argument("--no_memory", action="store_true")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--output_dir", default=os.path.join("outputs", "bench_step_overhead"))
    parser.add_argument("--_memory_probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args._memory_probe:
        memory_probe(args._memory_probe, args, device)
        return
    if args.quick:
        args.tasks, args.repeats, args.no_memory, args.batch_size, args.seq_len = "2,4", 3, True, 8, 32
    rows = []
    for layout in args.layouts.split(","):
        for num_tasks in (int(k) for k in args.tasks.split(",")):
            config_rows = time_config(layout, num_tasks, args, device)
            if not args.no_memory:
                for row in config_rows:
                    row["peak_mem_mb"] = peak_memory(layout, num_tasks, row["mode"], args)
            rows.extend(config_rows)
            for row in config_rows:
                print(f"{row['layout']:>8} K={row['tasks']:<2} {row['mode']:<15} ratio {row['ratio_vs_plain']:>6.3f}"
                      f"  {row['step_ms']:>8.1f} ms  peak {row['peak_mem_mb']} MiB", flush=True)
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"\nDevice: {device_name}; batch {args.batch_size} × {args.seq_len} tokens; median of {args.repeats}.")
    print("| layout | K | mode | ratio vs plain | step ms | peak MiB |\n| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['layout']} | {row['tasks']} | {row['mode']} | {row['ratio_vs_plain']:.3f} | {row['step_ms']} "
              f"| {row['peak_mem_mb'] if row['peak_mem_mb'] is not None else '-'} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
