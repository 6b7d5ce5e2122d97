"""Loss masking (``loss_masking='example' | 'batch'``) as a step strategy, for any model with a per-example loss.

The step's bookends run on its first and last micro-batch: :meth:`LossMasker.begin_step` refreshes ``g_clean``,
each micro-batch adds its (masked) gradient, :meth:`LossMasker.end_step` averages over ranks and applies the
batch rule (Wang et al. 2021, arXiv 2102.13549; docs/masking.md). The task weights are static (``linear``); no
combiner is called. A non-finite noisy loss or update follows ``nonfinite_policy`` like every other strategy
(``drop_task`` cannot drop a task from a per-example loss and skips the step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hf_mtl.steps.base import StepStrategy, register_step_strategy
from hf_mtl.steps.record import StepRecord

if TYPE_CHECKING:
    from hf_mtl.masking.masker import LossMasker

MASKING_STATE_NAME = "loss_masking_state.json"


@register_step_strategy
class MaskingStep(StepStrategy):
    """Gradient-guided loss masking; needs ``masker=`` (a bound :class:`~hf_mtl.masking.LossMasker`)."""

    name = "masking"
    state_file = MASKING_STATE_NAME

    def __init__(self, *args: Any, masker: LossMasker, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.masker = masker
        self._open = False
        self._loss_sum = 0.0
        self._task_loss_sum = torch.zeros(self.context.num_tasks, dtype=torch.float64)
        self._has_task_losses = False

    def micro_batch(self, model: nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
        context, masker = self.context, self.masker
        grad_scale = context.grad_scale()
        if not self._open:
            masker.begin_step(self.module, context.step, context.autocast, grad_scale)
            self._open = True
        loss = masker.micro_batch(self.module, inputs, grad_scale * context.micro_batch_scale, context.autocast,
                                  context.step)
        self._loss_sum += float(loss) * context.micro_batch_scale
        task_losses = masker.last_task_losses
        if task_losses is not None:
            self._has_task_losses = True
            ordered = torch.tensor([float(task_losses.get(n, math.nan)) for n in context.task_names],
                                   dtype=torch.float64)
            self._task_loss_sum += ordered * context.micro_batch_scale
        return loss * context.micro_batch_scale

    def end_step(self) -> StepRecord:
        context = self.context
        record = self.new_record()
        self._open = False
        nonfinite_loss = context.any_over_ranks(not math.isfinite(self._loss_sum))
        self.masker.end_step(context.step, context.grad_scale())
        if self._has_task_losses:
            record.losses = context.mean_over_ranks(self._task_loss_sum)
        record.extras.update({k: v for k, v in self.masker.last_step.items() if k not in ("step", "skipped")})
        nonfinite_update = context.any_over_ranks(not _finite_gradients(self.module))
        if nonfinite_loss or nonfinite_update:
            bad = [n for n, v in zip(context.task_names, (record.losses if record.losses is not None
                                                          else torch.full((context.num_tasks,), math.nan)).tolist(),
                                     strict=True) if not math.isfinite(v)] or list(context.task_names)
            record.nonfinite_tasks = bad
            context.nonfinite(bad)  # raises under nonfinite_policy='raise'
            record.skip(f"non-finite {'noisy loss' if nonfinite_loss else 'update'} under loss masking")
        self._loss_sum = 0.0
        self._task_loss_sum.zero_()
        self._has_task_losses = False
        return record

    def log_metrics(self) -> dict[str, float]:
        return self.masker.log_metrics()

    def state_dict(self) -> dict[str, Any]:
        return self.masker.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.masker.load_state_dict(state)


def _finite_gradients(module: nn.Module) -> bool:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True
