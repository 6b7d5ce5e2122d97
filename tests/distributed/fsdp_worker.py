"""Worker for the FSDP2 test: ``params`` mode on a model sharded by ``fully_shard``, two gloo ranks on CPU.

Run under ``torchrun --nproc_per_node 2``. Each rank builds the same tiny three-task model, keeps an unsharded
copy (the reference) and shards the original with ``fully_shard`` (each encoder layer, then the root, as
accelerate's FSDP plugin wraps a BERT). Steps of two micro-batches per rank (each rank's data drawn from a
generator seeded by rank and micro-batch, so every rank can rebuild the others') go through ``ParamsStep`` and
AdamW on the shards. The reference, in plain autograd on the unsharded copy: each task's gradient averaged over
all four micro-batches of the step, the same combiner on their float64 Gram, ``Σ_k w_k J_k`` on the encoder,
each head its own gradient, the same AdamW. Rank r saves both runs to ``OUT/rank{r}.pt``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch.distributed.fsdp import fully_shard
from transformers import BertConfig

from hf_mtl import MultiTaskConfig, MultiTaskModel, Task
from hf_mtl.combiners import get_combiner
from hf_mtl.steps import StepContext, get_step_strategy

TASKS = [Task("polarity", num_labels=2), Task("topic", num_labels=3), Task("length", num_labels=4)]
VOCAB, LENGTH, BATCH, MICRO_BATCHES, STEPS, WORLD = 50, 6, 3, 2, 2, 2


def micro_batch(layout: str, step: int, rank: int, index: int) -> dict:
    """One micro-batch of ``rank`` in either layout, reproducible on every rank."""
    generator = torch.Generator().manual_seed(1000 * step + 10 * rank + index)

    def inputs() -> dict[str, torch.Tensor]:
        ids = torch.randint(1, VOCAB, (BATCH, LENGTH), generator=generator)
        mask = torch.ones(BATCH, LENGTH, dtype=torch.long)
        mask[0, LENGTH - 2 :] = 0  # one padded row
        return {"input_ids": ids, "attention_mask": mask}

    def labels(task: Task) -> torch.Tensor:
        return torch.randint(0, task.num_labels, (BATCH,), generator=generator)

    if layout == "disjoint":
        return {"task_batches": {t.name: {**inputs(), "labels": labels(t)} for t in TASKS}}
    return {"inputs": inputs(), "labels": {t.name: labels(t) for t in TASKS}}


def task_losses(model: MultiTaskModel, batch: dict) -> list[torch.Tensor]:
    if "task_batches" in batch:
        out = model(task_batches=batch["task_batches"])
    else:
        out = model(inputs=batch["inputs"], labels=batch["labels"])
    return [out.task_losses[t.name] for t in TASKS]


def reference_step(model: MultiTaskModel, optimizer: torch.optim.Optimizer, combiner, layout: str, step: int) -> dict:
    """The step in plain autograd: J averaged over every rank's micro-batches, combined, one AdamW step."""
    shared = model.shared_parameters()
    count = WORLD * MICRO_BATCHES
    rows = [torch.zeros(sum(p.numel() for p in shared), dtype=torch.float64) for _ in TASKS]
    heads = {t.name: [torch.zeros_like(p) for p in model.task_specific_parameters(t.name)] for t in TASKS}
    losses = torch.zeros(len(TASKS), dtype=torch.float64)
    touched = [False] * len(shared)  # the pooler is in no task's graph: its .grad stays None, as in any step
    for rank in range(WORLD):
        for index in range(MICRO_BATCHES):
            for k, (task, loss) in enumerate(zip(TASKS, task_losses(model, micro_batch(layout, step, rank, index)), strict=True)):
                specific = model.task_specific_parameters(task.name)
                grads = torch.autograd.grad(loss, shared + specific, retain_graph=True, allow_unused=True)
                touched = [t or g is not None for t, g in zip(touched, grads[: len(shared)], strict=True)]
                rows[k] += torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                                      for g, p in zip(grads[: len(shared)], shared, strict=True)]) / count
                for acc, g in zip(heads[task.name], grads[len(shared):], strict=True):
                    acc += g / count
                losses[k] += float(loss) / count
    jacobian = torch.stack(rows)
    gram = jacobian @ jacobian.T
    weights = combiner(gram, losses=losses).double()
    update = weights @ jacobian
    offset = 0
    for param, reached in zip(shared, touched, strict=True):
        if reached:
            param.grad = update[offset : offset + param.numel()].view_as(param).float()
        offset += param.numel()
    for task in TASKS:
        for param, grad in zip(model.task_specific_parameters(task.name), heads[task.name], strict=True):
            param.grad = grad
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"weights": weights, "gram": gram, "jacobian": jacobian, "touched": touched}


def full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor().detach().clone() if hasattr(tensor, "full_tensor") else tensor.detach().clone()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--layout", choices=["disjoint", "shared"], required=True)
    parser.add_argument("--combiner", default="mgda")
    args = parser.parse_args()
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)  # initialises the gloo process group from torchrun's environment
    rank = dist.get_rank()
    torch.manual_seed(0)
    encoder = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=24, max_position_embeddings=32, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
    model = MultiTaskModel(MultiTaskConfig(encoder_config=encoder, tasks=TASKS))
    reference = copy.deepcopy(model)
    for layer in model.encoder.encoder.layer:
        fully_shard(layer)
    fully_shard(model)
    step = {"value": 0}
    context = StepContext(accelerator=accelerator, task_names=[t.name for t in TASKS], nonfinite_policy="raise",
                          global_step=lambda: step["value"], accumulation=lambda: MICRO_BATCHES,
                          record_task_gradients=True)
    strategy = get_step_strategy("params")(context, model, get_combiner(args.combiner))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2)
    reference_combiner = get_combiner(args.combiner)
    records, expected = [], []
    for step["value"] in range(STEPS):
        for index in range(MICRO_BATCHES):
            strategy.micro_batch(model, micro_batch(args.layout, step["value"], rank, index))
        record = strategy.end_step()
        grads = {name: None if p.grad is None else full(p.grad) for name, p in model.named_parameters()}
        records.append({"weights": record.weights, "gram": record.gram, "task_gradients": record.task_gradients,
                        "grads": grads, "buffer_class": type(strategy.buffer).__name__})
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        expected.append(reference_step(reference, reference_optimizer, reference_combiner, args.layout, step["value"]))
    torch.save({"records": records, "expected": expected,
                "params": {name: full(p) for name, p in model.named_parameters()},
                "expected_params": {name: p.detach().clone() for name, p in reference.named_parameters()}},
               os.path.join(args.out, f"rank{rank}.pt"))
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown, where leftover gloo threads can abort a finished rank (SIGABRT)


if __name__ == "__main__":
    main()
