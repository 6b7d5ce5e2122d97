#!/usr/bin/env python
"""Where a ``params`` step's time goes: its phases, read from ``torch.profiler``, against the autograd floor.

The ``params`` step marks its phases for the profiler (``hf_mtl.gradients.profiled``): ``hf_mtl::forward``
(encoder and heads), ``hf_mtl::task_backward`` (one ``autograd.grad`` per task), ``hf_mtl::buffer_add`` (the
task's gradient copied into its row of J), ``hf_mtl::reduce`` (which contains ``hf_mtl::gram``, ``J Jᵀ``
in float64), ``hf_mtl::combiner`` (the weights from the K×K Gram) and ``hf_mtl::write_combination``
(``w @ J`` into ``.grad``). For each layout and K, on the embedded MiniLM and the same batch as
``step_overhead.py``, it profiles ``--repeats`` steps and prints each phase's milliseconds per step, the
rest of the step (``other``: the Trainer's own work, label slicing, etc.) and, timed without the profiler in
the same rounds, the autograd floor (one forward + K ``autograd.grad``; shared input) and a plain
``Trainer.training_step``.

    python benchmarks/step_phases.py --layouts shared --tasks 2,4,8 --repeats 5 --json phases.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch
from step_overhead import Bench
from torch.profiler import ProfilerActivity, profile

PHASES = ("forward", "task_backward", "buffer_add", "reduce", "gram", "combiner", "write_combination")


def phase_row(layout: str, num_tasks: int, args: argparse.Namespace, device: torch.device) -> dict:
    """One configuration: the phases of ``args.repeats`` profiled ``params`` steps (ms per step), each round
    followed by the unprofiled floor and plain steps."""
    bench = Bench(layout, num_tasks, args.batch_size, args.seq_len, device, args.output_dir, None)
    references = ["plain"] + (["autograd_floor"] if layout == "shared" else [])
    for method in ["params", *references]:  # warm-up
        bench.run_once(method)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    reference_seconds: dict[str, list[float]] = {m: [] for m in references}
    params_seconds: list[float] = []
    totals = dict.fromkeys(PHASES, 0.0)  # µs over all rounds
    for _ in range(args.repeats):
        with profile(activities=activities) as profiler:
            params_seconds.append(bench.run_once("params"))
        for event in profiler.key_averages():
            name = event.key.removeprefix("hf_mtl::")
            if name in totals:
                totals[name] += event.cpu_time_total
        for method in references:
            reference_seconds[method].append(bench.run_once(method))
    phases = {name: round(total / 1000 / args.repeats, 1) for name, total in totals.items()}
    step_ms = 1000 * statistics.mean(params_seconds)
    counted = sum(v for k, v in phases.items() if k != "gram")  # gram runs inside reduce
    row = {"layout": layout, "tasks": num_tasks, "params_ms": round(step_ms, 1), **phases,
           "other": round(step_ms - counted, 1), "buffer_mb": bench.buffer_mb("params")}
    for method, seconds in reference_seconds.items():
        row[f"{method}_ms"] = round(1000 * statistics.median(seconds), 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="2,4,8")
    parser.add_argument("--layouts", default="disjoint,shared")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--output_dir", default=os.path.join("outputs", "bench_step_phases"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for layout in args.layouts.split(","):
        for num_tasks in (int(k) for k in args.tasks.split(",")):
            row = phase_row(layout, num_tasks, args, device)
            print(row, flush=True)
            rows.append(row)
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"\nDevice: {device_name}; batch {args.batch_size} × {args.seq_len} tokens; ms per step, mean of "
          f"{args.repeats} profiled params steps (floor and plain: median of {args.repeats}, unprofiled).")
    columns = ["params_ms", *PHASES, "other", "autograd_floor_ms", "plain_ms", "buffer_mb"]
    print("| layout | K | " + " | ".join(columns) + " |\n| --- | --- | " + " | ".join("---" for _ in columns) + " |")
    for row in rows:
        print(f"| {row['layout']} | {row['tasks']} | " + " | ".join(str(row.get(c, "-")) for c in columns) + " |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
