#!/usr/bin/env python
"""The collectives behind ``params`` mode across ranks, timed on the backend at hand.

The whole reduction all-reduces the K×P per-task gradient buffer; the sharded one reduce-scatters it and
all-gathers the P-element update (``hf_mtl.gradients.TaskGradientBuffer``). This times both on a float32
tensor of ``--elements`` (median of ``--repeats``) and reports how much each raised the peak resident set
(CPU) and the most bytes the collective's own live tensors held at once beyond its input and output (CPU:
``torch.profiler``'s allocation records; GPU: ``max_memory_allocated``), which decides ``shard_task_gradients``'s
default per backend (``hf_mtl.gradients.default_sharding``).

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 benchmarks/collectives.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist
from step_overhead import peak_tensors_above_setup


def peak_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")


def timed(run, repeats: int, device: torch.device) -> tuple[float, float, float]:
    """Median seconds of ``run()`` over ranks in step, the peak resident set it added (MiB, CPU) and the peak of
    the live tensors it allocated (MiB)."""
    run()
    seconds = []
    before = 0
    if device.type == "cpu":
        reset_peak()
        before = peak_kib()
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    added = (peak_kib() - before) / 1024 if device.type == "cpu" else float("nan")
    return statistics.median(seconds), added, peak_tensors_above_setup(run, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", type=int, default=4 * 22_713_216, help="K·P (default: 4 tasks × MiniLM)")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    world = dist.get_world_size()
    device = torch.device("cuda", dist.get_rank()) if torch.cuda.is_available() else torch.device("cpu")
    n = args.elements // (args.tasks * world) * args.tasks * world
    buffer = torch.randn(n, device=device)
    owned = torch.empty(n // world, device=device)
    update = torch.empty(n // args.tasks, device=device)
    rows = {
        "all_reduce K·P": timed(lambda: dist.all_reduce(buffer), args.repeats, device),
        "reduce_scatter K·P": timed(lambda: dist.reduce_scatter_single(owned, buffer), args.repeats, device),
        "all_gather P": timed(lambda: dist.all_gather_single(update, owned[: n // (args.tasks * world)]),
                              args.repeats, device),
    }
    if dist.get_rank() == 0:
        print(f"backend {dist.get_backend()}, {world} processes, K·P = {n} float32, median of {args.repeats}")
        for name, (seconds, added, tensors) in rows.items():
            print(f"{name:<20} {seconds * 1000:9.1f} ms   peak resident set +{added:.0f} MiB   "
                  f"live tensors allocated +{tensors:.0f} MiB")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
