"""Worker for the sharded-buffer test: two ranks fill :class:`TaskGradientBuffer` with known gradients.

Run under ``torchrun --nproc_per_node 2``. Each rank's gradients are drawn from a generator seeded by its
rank, so the worker also knows the other rank's and computes the expected averaged ``J`` in float64. The
cases the reduction must get right: a task absent on rank 1 (``seen``), a parameter no rank's task reached
(``.grad`` stays ``None``), one reached on rank 1 only, a NaN gradient on rank 1, and two micro-batches
accumulated per task. Rank r saves its results for ``shard=True`` and ``shard=False`` to ``OUT/rank{r}.pt``.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist

from hf_mtl.gradients import LookedUpRows, TaskGradientBuffer

SHAPES = [(5, 3), (7,), (4, 4), (3,), (3, 2)]  # P = 47: the sharded buffer pads it to 2 × 24 columns
NUM_TASKS = 3
UNUSED = 3  # no rank's tasks reach this parameter
RANK1_ONLY = 4  # only rank 1's tasks reach this one


def gradients(rank: int) -> list[tuple[int, list[torch.Tensor | None]]]:
    """``(task, grads)`` for each micro-batch add of ``rank``, as the step would feed the buffer."""
    generator = torch.Generator().manual_seed(100 + rank)
    adds = []
    tasks = [0, 1, 2] if rank == 0 else [0, 1]  # task 2 is absent on rank 1
    for _micro_batch in range(2):
        for k in tasks:
            grads: list[torch.Tensor | None] = [torch.randn(s, generator=generator) for s in SHAPES]
            grads[UNUSED] = None
            if rank == 0:
                grads[RANK1_ONLY] = None
            if rank == 1 and k == 1 and _micro_batch == 1:
                grads[0] = grads[0].clone().fill_(float("nan"))
            adds.append((k, grads))
    return adds


def expected_jacobian(world: int) -> torch.Tensor:
    total = torch.zeros(NUM_TASKS, sum(torch.Size(s).numel() for s in SHAPES), dtype=torch.float64)
    for rank in range(world):
        for k, grads in gradients(rank):
            total[k] += torch.cat([(g if g is not None else torch.zeros(s)).reshape(-1).double()
                                   for g, s in zip(grads, SHAPES, strict=True)])
    return total / world


def run(shard: bool, dtype: torch.dtype = torch.float32) -> dict[str, object]:
    rank = dist.get_rank()
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
    buffer = TaskGradientBuffer(params, NUM_TASKS, shard=shard, dtype=dtype)
    for k, grads in gradients(rank):
        buffer.add(k, grads)
    extra = torch.full((6,), float(rank + 1))  # the heads' flattened gradients: mean 1.5 over two ranks
    reduced = buffer.reduce(extra)
    gram = buffer.gram().clone()
    weights = torch.tensor([0.25, 0.0, 0.75], dtype=torch.float64)  # task 1 (NaN on rank 1) left out
    buffer.write_combination(weights, scale=2.0)
    update_elements = buffer.elements_sent
    full = buffer.task_gradients().clone()
    return {"gram": gram, "extra": reduced, "seen": buffer.seen.clone(), "jacobian": full,
            "grads": [None if p.grad is None else p.grad.detach().clone() for p in params],
            "elements_sent": update_elements, "numel": buffer.numel}


def run_row_sparse(row_sparse: bool, used_elsewhere_on_rank1: bool = False) -> list[dict[str, object]]:
    """Two steps of two tasks through a vocabulary-sized embedding, each rank looking up its own rows (two
    micro-batches per step): with ``row_sparse`` the buffer holds only the looked-up rows (checked in the first
    step), reducing their union over ranks; else it is dense. With ``used_elsewhere_on_rank1``,
    rank 1's first gradient also has a row no lookup recorded. One result per step."""
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same model on both ranks
    words, mix = torch.nn.Embedding(5000, 4), torch.nn.Linear(4, 3)
    params = [words.weight, mix.weight, mix.bias]
    buffer = TaskGradientBuffer(params, 2, shard=False, row_sparse={0: LookedUpRows([words])} if row_sparse else None)
    generator = torch.Generator().manual_seed(200 + rank)
    steps = []
    for step in range(2):
        for micro_batch in range(2):
            for k in range(2):
                ids = torch.randint(0, 4999, (3, 5), generator=generator)
                with buffer.recording_rows():
                    out = mix(words(ids))
                grads = list(torch.autograd.grad(out.pow(2).mean() * (k + 1) + out[..., k].sum(), params))
                if used_elsewhere_on_rank1 and rank == 1 and step == micro_batch == k == 0:
                    grads[0][4999] += 1.0  # row 4999 is not among the looked-up ones (ids < 4999)
                buffer.add(k, grads)
        buffer.reduce()
        elements_sent = buffer.elements_sent
        buffer.write_combination(torch.tensor([0.5, 1.5], dtype=torch.float64))
        steps.append({"gram": buffer.gram().clone(), "jacobian": buffer.task_gradients().clone(),
                      "grads": [p.grad.detach().clone() for p in params], "row_sparse": buffer.row_sparse,
                      "elements_sent": elements_sent})
        buffer.reset()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    results = {"sharded": run(True), "all_reduce": run(False), "sharded_bf16": run(True, torch.bfloat16),
               "all_reduce_bf16": run(False, torch.bfloat16), "expected_jacobian": expected_jacobian(2),
               "row_sparse": run_row_sparse(True), "row_dense": run_row_sparse(False),
               "row_sparse_fallback": run_row_sparse(True, True), "row_dense_fallback": run_row_sparse(False, True),
               "default_shard": TaskGradientBuffer([torch.nn.Parameter(torch.zeros(2))], 1).sharded}
    torch.save(results, os.path.join(args.out, f"rank{dist.get_rank()}.pt"))
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown, where leftover gloo threads can abort a finished rank (SIGABRT)


if __name__ == "__main__":
    main()
