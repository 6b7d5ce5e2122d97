"""``params`` mode: exact per-task gradients of the shared parameters, combined once per optimizer step.

Each micro-batch adds every task's gradient of the shared encoder parameters to its row of the K×P buffer
(:class:`~hf_mtl.gradients.TaskGradientBuffer`); the task-specific parameters (heads) take their own task's
gradient directly. At the step's end the buffer (and the head gradients) are averaged over ranks — by default
reduce-scattered, so that each rank forms the partial Gram of its columns and only the K×K Gram is all-reduced
(``shard_task_gradients``) — the combiner is called once, and ``Σ_k w_k J_k`` is written into the shared
parameters' ``.grad``. Disjoint task data costs about one plain step; shared inputs cost K backward
passes through the encoder (use ``encoder_output`` mode to avoid them).

Under FSDP2 (``fully_shard``, e.g. accelerate's FSDP plugin with ``fsdp_version: 2``) the parameters are
already sharded: the micro-batch runs one forward of the sharded model and one backward per task, FSDP
reduce-scatters each task's gradient into the parameters' shards, and those shards are the task's row of a
:class:`~hf_mtl.gradients.ShardedParameterBuffer`; only the K×K Gram crosses ranks besides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.profiler import record_function

from hf_mtl.gradients import (
    LookedUpRows,
    ShardedParameterBuffer,
    TaskGradientBuffer,
    flatten_grads,
    unflatten_into_grads,
    vocabulary_embeddings,
)
from hf_mtl.steps.base import StepStrategy, ordered_losses, register_step_strategy, solve_weights
from hf_mtl.steps.record import StepRecord


@register_step_strategy
class ParamsStep(StepStrategy):
    """Per-task parameter gradients → Gram → combiner → ``Σ_k w_k g_k``."""

    name = "params"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        engine = self.context.engine
        if engine is not None and not (engine == "FSDP" and getattr(self.context.accelerator, "is_fsdp2", False)):
            raise ValueError(
                f"gradient_mode='params' is not supported under {engine}"
                f"{' version 1' if engine == 'FSDP' else ''}: its per-task gradients need whole parameters on every "
                "rank, or FSDP2's sharded ones (accelerate's FSDP plugin with fsdp_version: 2). Use FSDP2, DDP "
                "(torchrun / accelerate multi-GPU; see shard_task_gradients), gradient_mode='encoder_output' (its final "
                "backward is a plain backward any engine runs) or a loss-based combiner."
            )
        self._buffer: TaskGradientBuffer | None = None  # K×P, allocated at the first step
        self._loss_sum = torch.zeros(self.context.num_tasks, dtype=torch.float64)

    @property
    def buffer(self) -> TaskGradientBuffer | None:
        """The K×P per-task gradient buffer (``None`` before the first micro-batch)."""
        return self._buffer

    def micro_batch(self, model: nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
        context, module = self.context, self.module
        if self._buffer is None:
            self._buffer = self._new_buffer()
        scale = context.micro_batch_scale * context.grad_scale()
        names = context.task_names
        losses: list[torch.Tensor] = []
        if isinstance(self._buffer, ShardedParameterBuffer):
            losses = self._backward_per_task(model, inputs, scale)
        elif "task_batches" in inputs:
            module.check_tasks(list(inputs["task_batches"]))
            for k, name in enumerate(names):
                sub_batch = inputs["task_batches"].get(name)
                if sub_batch is None:
                    raise ValueError(f"Step {context.step}: task {name!r} has no sub-batch in this batch.")
                with context.autocast(), record_function("hf_mtl::forward"), self._buffer.recording_rows():
                    z = module.encode(sub_batch, task=name)
                    loss, _ = module.head_loss(name, z, sub_batch)
                self._accumulate(k, name, loss * scale, retain_graph=False)
                losses.append(loss.detach())
        else:
            labels = inputs["labels"]
            module.check_tasks(list(labels))
            with context.autocast(), record_function("hf_mtl::forward"), self._buffer.recording_rows():
                z = module.encode(inputs["inputs"])
                task_losses = [module.head_loss(n, z, module.task_batch(inputs["inputs"], labels, n))[0] for n in names]
            for k, (name, loss) in enumerate(zip(names, task_losses, strict=True)):
                self._accumulate(k, name, loss * scale, retain_graph=k < len(names) - 1)
                losses.append(loss.detach())
        stacked = torch.stack(losses)
        self._loss_sum += stacked.double().cpu() * context.micro_batch_scale
        return context.reported_loss(stacked)

    def _new_buffer(self) -> TaskGradientBuffer:
        shared = self.module.shared_parameters()
        dtype = getattr(torch, self.context.task_gradient_dtype)
        if any(type(p).__name__ == "DTensor" for p in shared):  # sharded by FSDP2 (fully_shard)
            return ShardedParameterBuffer(shared, self.context.num_tasks, dtype=dtype)
        # A vocabulary's gradient is nonzero only in the rows the step looked up: held row by row (unsharded).
        looked_up = {i: LookedUpRows(modules) for i, modules in vocabulary_embeddings(self.module, shared).items()}
        return TaskGradientBuffer(shared, self.context.num_tasks, shard=self.context.shard_task_gradients, dtype=dtype,
                                  row_sparse=looked_up)

    def _backward_per_task(self, model: nn.Module, inputs: Mapping[str, Any], scale: float) -> list[torch.Tensor]:
        """FSDP2: one forward of the sharded model, one backward per task; each task's reduce-scattered shards go
        to its row and leave ``.grad`` empty for the next task (the heads' shards accumulate in ``.grad``)."""
        context, buffer = self.context, self._buffer
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(True)  # accelerate's no_sync defers it; every task's shard is needed now
        if "task_batches" in inputs:
            self.module.check_tasks(list(inputs["task_batches"]))
            forward = {"task_batches": inputs["task_batches"]}
        else:
            self.module.check_tasks(list(inputs["labels"]))
            forward = {"inputs": inputs["inputs"], "labels": inputs["labels"]}
        with context.autocast(), record_function("hf_mtl::forward"):
            task_losses = model(**forward).task_losses
        losses = ordered_losses(task_losses, context)
        for k in range(context.num_tasks):
            with record_function("hf_mtl::task_backward"):
                (losses[k] * scale).backward(retain_graph=k < context.num_tasks - 1)
            buffer.add(k, [None if p.grad is None else p.grad.to_local() for p in buffer.sharded_params])
            for param in buffer.sharded_params:
                param.grad = None
        return list(losses.detach())

    def _accumulate(self, k: int, name: str, loss: torch.Tensor, retain_graph: bool) -> None:
        plan = self._buffer.differentiated()
        specific = self.module.task_specific_parameters(name)
        with record_function("hf_mtl::task_backward"):
            grads = torch.autograd.grad(loss, plan.tensors + specific, retain_graph=retain_graph, allow_unused=True)
        self._buffer.add_differentiated(k, plan, grads[: len(plan.tensors)])
        for param, grad in zip(specific, grads[len(plan.tensors):], strict=True):
            if grad is not None:
                param.grad = grad if param.grad is None else param.grad + grad

    def end_step(self) -> StepRecord:
        context, module, buffer = self.context, self.module, self._buffer
        record = self.new_record()
        if isinstance(buffer, ShardedParameterBuffer):
            buffer.reduce()  # the heads' shards were reduce-scattered by FSDP with each task's backward
        else:
            specific = [p for n in context.task_names for p in module.task_specific_parameters(n)]
            reduced = buffer.reduce(flatten_grads(specific))
            if reduced is not None:
                unflatten_into_grads(specific, reduced)
        grad_scale = context.grad_scale()
        gram = buffer.gram() / (grad_scale * grad_scale)
        losses = context.mean_over_ranks(self._loss_sum)
        weights = solve_weights(self.combiner, context, record, losses, gram=gram, present=buffer.seen)
        if weights is not None:
            buffer.write_combination(weights)
            for k, name in enumerate(context.task_names):
                if not (torch.isfinite(gram[k, k]) and torch.isfinite(losses[k])):
                    for param in module.task_specific_parameters(name):  # its head saw a NaN/inf loss
                        param.grad = None
        if context.record_task_gradients:
            record.task_gradients = (buffer.task_gradients().float() / grad_scale).detach().cpu()
        buffer.reset()
        self._loss_sum.zero_()
        return record
