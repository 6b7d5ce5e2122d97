"""Micro-batches whose backward waits for the step's weights.

Loss-dependent combiners (uncertainty, DWA, FAMO, GradNorm) and the encoder-output Gram need the whole
optimizer step — every accumulation micro-batch — before the weights exist, but the weights multiply every
micro-batch's loss. Rather than keep every micro-batch's graph alive (the memory accumulation exists to save),
a micro-batch is run once to measure it, its inputs and RNG state are kept, and it is run again with the same
dropout masks once the weights are known: one extra forward per earlier micro-batch, exact results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hf_mtl.gradients import average_gradients_over_ranks
from hf_mtl.steps.context import StepContext
from hf_mtl.steps.weighting import weighted_loss


@dataclass
class _Pending:
    inputs: Mapping[str, Any]
    cpu_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None


class MicroBatchReplay:
    """Keeps ``(inputs, RNG state)`` of micro-batches and re-runs them with the RNG state they first saw."""

    def __init__(self) -> None:
        self._pending: list[_Pending] = []

    def __len__(self) -> int:
        return len(self._pending)

    def remember(self, inputs: Mapping[str, Any]) -> None:
        """Call *before* the micro-batch's first forward: stores its inputs and the RNG state it will consume."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        self._pending.append(_Pending(inputs, torch.get_rng_state(), cuda))

    def replay(self, run: Callable[[Mapping[str, Any]], None]) -> None:
        """``run(inputs)`` for each kept micro-batch under its original RNG state; the RNG is left as it was."""
        devices = list(range(torch.cuda.device_count())) if any(p.cuda_rng for p in self._pending) else []
        with torch.random.fork_rng(devices=devices):
            for pending in self._pending:
                torch.set_rng_state(pending.cpu_rng)
                if pending.cuda_rng is not None:
                    torch.cuda.set_rng_state_all(pending.cuda_rng)
                run(pending.inputs)
        self._pending.clear()

    def backward_weighted(self, module: nn.Module, weights: torch.Tensor, context: StepContext) -> None:
        """Replay every kept micro-batch with a backward of its ``Σ_k w_k L_k`` (its share of the step, loss scale
        included) on the unwrapped ``module``, then average the gradients over ranks in one all-reduce."""
        scale = context.micro_batch_scale * context.grad_scale()

        def backward(batch: Mapping[str, Any]) -> None:
            with context.autocast():
                outputs = module(**batch)
            total = weighted_loss(outputs.task_losses, weights, context.task_names, outputs.soft_sharing_penalty)
            (total * scale).backward()

        self.replay(backward)
        average_gradients_over_ranks([p for p in module.parameters() if p.requires_grad])

    def clear(self) -> None:
        self._pending.clear()
