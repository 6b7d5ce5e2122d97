#!/usr/bin/env python
"""Step time and peak memory of the gradient modes on a LoRA adapter against a plain LoRA ``Trainer`` step.

The embedded MiniLM encoder carries a LoRA adapter (peft; Hu et al. 2021, arXiv 2106.09685), its own weights frozen;
the heads are fully trainable. For K = 2, 4, 8 tasks, disjoint (a sub-batch per task) and shared-input (every
example labelled for every task) batches, each method's training step (forward, backward, combination; not the
optimizer step) is timed interleaved with a plain ``transformers.Trainer.training_step`` on the summed loss of the
same LoRA model and batch, so the ratio is stable on a noisy machine:

* ``plain_lora``     — ``transformers.Trainer.training_step`` (the reference, ratio 1.0);
* ``params``         — per-task gradients of the adapter (the shared parameters), Gram, MGDA, combined ``.grad``;
* ``encoder_output`` — Gram of ``∂L_k/∂z``, MGDA, one backward of ``Σ w_k L_k``;
* ``autograd_floor`` — shared input only: one forward + K ``autograd.grad`` calls, nothing else (what any exact
  per-task gradient costs in time and memory: the forward's graph is kept until the last task's backward);
* ``autograd_batched`` — shared input only: one forward, the K cotangents ``∂L_k/∂z``, one vectorised backward of
  all K through the encoder (``is_grads_batched``), nothing else.

Peak memory (MiB) is measured in a fresh process per row that builds the model and batch, then runs two steps of
that one method: on CPU, the peak resident set during the steps minus the resident set before them (Linux: the peak
is reset after set-up by writing 5 to ``/proc/self/clear_refs``, since loading the model peaks higher than a LoRA
step, which would hide the step in a whole-process peak); on GPU, ``torch.cuda.max_memory_allocated`` above the
set-up. ``shared_params`` is the number of adapter parameters (the width of the per-task gradient buffer), printed
next to the frozen base encoder's size.

    python benchmarks/lora_step.py --quick                   # < 60 s on 2 cores, no memory probes
    python benchmarks/lora_step.py --json lora_results.json  # full table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from peft import LoraConfig
from step_overhead import (
    PEAK_MEASURES,
    add_common_arguments,
    autograd_batched,
    autograd_floor,
    dash,
    make_batch,
    run_probes,
    synchronize,
)
from transformers import AutoTokenizer, Trainer, TrainingArguments

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtl.data.embedded import embedded_encoder_path

METHODS = ("plain_lora", "params", "encoder_output", "autograd_floor", "autograd_batched")


class LoraBench:
    """One LoRA model and batch; a step function per method, each leaving the summed-or-combined ``.grad``."""

    def __init__(self, layout: str, num_tasks: int, args: argparse.Namespace, device: torch.device) -> None:
        encoder = embedded_encoder_path()
        tokenizer = AutoTokenizer.from_pretrained(encoder)
        self.tasks, self.batch = make_batch(tokenizer, layout, num_tasks, args.batch_size, args.seq_len, device)
        torch.manual_seed(0)
        targets = [name.strip() for name in args.lora_target_modules.split(",")] if args.lora_target_modules else None
        lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules=targets)
        self.model = MultiTaskModel.from_encoder(encoder, self.tasks, peft_config=lora).to(device)
        if args.gradient_checkpointing:  # every method: the per-task backwards recompute each layer's forward
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        common = dict(output_dir=args.output_dir, report_to=[], use_cpu=device.type == "cpu", disable_tqdm=True,
                      per_device_train_batch_size=args.batch_size)
        self.trainers = {"plain_lora": Trainer(self.model, TrainingArguments(**common))}
        for mode in ("params", "encoder_output"):
            self.trainers[mode] = MultiTaskTrainer(
                self.model, MultiTaskTrainingArguments(**common, combiner="mgda", gradient_mode=mode),
                processing_class=tokenizer)
        for trainer in self.trainers.values():
            trainer.current_gradient_accumulation_steps = 1

    def step(self, method: str) -> Callable[[], object]:
        if method == "autograd_floor":
            return lambda: autograd_floor(self.model, self.tasks, self.batch)
        if method == "autograd_batched":
            return lambda: autograd_batched(self.model, self.tasks, self.batch)
        return lambda: self.trainers[method].training_step(self.model, self.batch)

    def run_once(self, method: str) -> float:
        fn = self.step(method)
        self.model.zero_grad(set_to_none=True)
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        return time.perf_counter() - start

    def sizes(self) -> tuple[int, int]:
        """(adapter parameters = the buffer's width, the frozen base encoder's parameters)."""
        return (sum(p.numel() for p in self.model.shared_parameters()),
                sum(p.numel() for p in self.model.encoder.parameters() if not p.requires_grad))


def time_config(layout: str, num_tasks: int, args: argparse.Namespace, device: torch.device) -> list[dict]:
    bench = LoraBench(layout, num_tasks, args, device)
    methods = [m for m in METHODS if (layout == "shared" or not m.startswith("autograd_"))
               and not (args.gradient_checkpointing and m == "autograd_batched")]  # vmap: no dropout inside
    for method in methods:  # warm-up
        bench.run_once(method)
    ratios: dict[str, list[float]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.repeats):
        times = {m: bench.run_once(m) for m in methods}
        for m in methods:
            ratios[m].append(times[m] / times["plain_lora"])
            seconds[m].append(times[m])
    adapter, encoder = bench.sizes()
    return [{"mode": m, "layout": layout, "tasks": num_tasks, "ratio_vs_plain": round(statistics.median(ratios[m]), 3),
             "step_ms": round(1000 * statistics.median(seconds[m]), 1), "peak_mem_mb": None,
             "peak_tensor_mb": None, "shared_params": adapter, "encoder_params": encoder} for m in methods]


def peak_memory(layout: str, num_tasks: int, method: str, args: argparse.Namespace) -> dict[str, float]:
    """Peak memory of one method above its state after set-up, by each measure in ``PEAK_MEASURES`` (MiB), in a
    fresh process per measure."""
    options = ["--batch_size", str(args.batch_size), "--seq_len", str(args.seq_len), "--lora_r", str(args.lora_r),
               "--output_dir", args.output_dir]
    if args.lora_target_modules:
        options += ["--lora_target_modules", args.lora_target_modules]
    if args.gradient_checkpointing:
        options.append("--gradient_checkpointing")
    return run_probes([sys.executable, __file__], f"{layout},{num_tasks},{method}", options)


def memory_probe(spec: str, args: argparse.Namespace, device: torch.device) -> None:
    layout, num_tasks, method, field = spec.split(",")
    bench = LoraBench(layout, int(num_tasks), args, device)
    print("peak", PEAK_MEASURES[field](lambda: bench.run_once(method), device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, os.path.join("outputs", "bench_lora_step"))
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--lora_target_modules", default=None, help="default: peft's (query,value for MiniLM)")
    parser.add_argument("--gradient_checkpointing", action="store_true",
                        help="activation checkpointing (non-reentrant) in every method, the plain step's included")
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
                    row.update(peak_memory(layout, num_tasks, row["mode"], args))
            rows.extend(config_rows)
            for row in config_rows:
                print(f"{row['layout']:>8} K={row['tasks']:<2} {row['mode']:<15} ratio {row['ratio_vs_plain']:>6.3f}"
                      f"  {row['step_ms']:>8.1f} ms  peak {row['peak_mem_mb']} MiB"
                      f" (tensors {row['peak_tensor_mb']} MiB)", flush=True)
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"\nDevice: {device_name}; batch {args.batch_size} × {args.seq_len} tokens; median of {args.repeats}; "
          f"LoRA r={args.lora_r}: {rows[0]['shared_params']} adapter parameters (the per-task gradient buffer's "
          f"width) of {rows[0]['encoder_params']} in the encoder "
          f"({rows[0]['encoder_params'] / rows[0]['shared_params']:.0f}× fewer).")
    print("| layout | K | mode | ratio vs plain LoRA | step ms | peak MiB | peak tensors MiB |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['layout']} | {row['tasks']} | {row['mode']} | {row['ratio_vs_plain']:.3f} | {row['step_ms']} "
              f"| {dash(row['peak_mem_mb'])} | {dash(row['peak_tensor_mb'])} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
