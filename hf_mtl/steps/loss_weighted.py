"""Loss-based combiners (``linear``, ``uncertainty``, ``dwa``, ``famo``, ``rlw``): one backward of ``Σ_k w_k L_k``.

When the combiner is called (once per optimizer step):

* combiners whose weights ignore this step's losses (``needs_losses=False``: ``linear``, ``rlw``) are called
  at the step's first micro-batch, and their weights apply to every micro-batch: one plain backward each;
* combiners that read the losses (``uncertainty``, ``dwa``, ``famo``) are called with the step's losses — the
  mean over all micro-batches and ranks, exactly what one large batch would give. With one micro-batch that
  is a plain forward/backward; with gradient accumulation each micro-batch is measured by a no-grad forward
  and replayed (:mod:`hf_mtl.steps.replay`) once the weights are known, costing one extra forward per
  micro-batch, and the gradients are averaged over ranks by one all-reduce.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hf_mtl.steps.base import StepStrategy, ordered_losses, register_step_strategy, solve_weights
from hf_mtl.steps.record import StepRecord
from hf_mtl.steps.replay import MicroBatchReplay
from hf_mtl.steps.weighting import weighted_loss


@register_step_strategy
class LossWeightedStep(StepStrategy):
    """``u = ∇ Σ_k w_k L_k`` with ``w`` from the losses (see the module docstring for when ``w`` is computed)."""

    name = "loss_weighted"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._replay = MicroBatchReplay()
        self._loss_sum = torch.zeros(self.context.num_tasks, dtype=torch.float64)
        self._record: StepRecord | None = None
        self._weights: torch.Tensor | None = None

    def _deferred(self) -> bool:
        return self.combiner.needs_losses and self.context.accumulation() > 1

    def micro_batch(self, model: nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
        if self._record is None:
            self._record = self.new_record()
        if self._deferred():
            if self.context.engine is not None:
                raise ValueError(
                    f"Combiner {self.combiner.name!r} reads the step's losses, which under gradient accumulation needs "
                    f"whole parameters to replay micro-batches; that is not available under {self.context.engine}. "
                    "Use gradient_accumulation_steps=1 or a combiner that ignores the losses (linear, rlw)."
                )
            return self._measure_then_replay(model, inputs)
        return self._plain(model, inputs)

    def _plain(self, model: nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
        context, record = self.context, self._record
        outputs = model(**inputs)
        losses = ordered_losses(outputs.task_losses, context)
        observed = context.mean_over_ranks(losses.detach().double().cpu())
        self._loss_sum += observed * context.micro_batch_scale
        if not record.skipped:
            if self._weights is None:  # the step's one combiner call
                self._weights = solve_weights(self.combiner, context, record, observed)
            else:
                self._check_later_micro_batch(observed)
        if not record.skipped and self._weights is not None:
            total = weighted_loss(outputs.task_losses, self._weights, context.task_names, outputs.soft_sharing_penalty)
            context.backward(total * context.micro_batch_scale)
        return context.reported_loss(losses)

    def _check_later_micro_batch(self, observed: torch.Tensor) -> None:
        """A task that turns non-finite after the combiner call: skip the step, or drop it from the rest."""
        context, record = self.context, self._record
        active = self._weights != 0
        bad = [context.task_names[k] for k in range(context.num_tasks)
               if bool(active[k]) and not bool(torch.isfinite(observed[k]))]
        if not bad:
            return
        record.nonfinite_tasks = sorted(set(record.nonfinite_tasks) | set(bad))
        if context.nonfinite(bad) == "skip_step" or self.combiner.stateful:
            record.skip(f"non-finite loss for task(s) {bad}")
            return
        for name in bad:
            self._weights[context.task_names.index(name)] = 0.0
        if not bool(self._weights.any()):
            record.skip("every task was dropped for a non-finite loss")

    def _measure_then_replay(self, model: nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
        context, record = self.context, self._record
        module = context.unwrap(model)
        self._replay.remember(inputs)
        with torch.no_grad(), context.autocast():
            outputs = module(**inputs)
        losses = ordered_losses(outputs.task_losses, context)
        self._loss_sum += losses.double().cpu() * context.micro_batch_scale
        if context.is_last_micro_batch:
            weights = solve_weights(self.combiner, context, record, context.mean_over_ranks(self._loss_sum))
            if weights is None:
                self._replay.clear()
            else:
                self._replay.backward_weighted(module, weights, context)
        return context.reported_loss(losses)

    def end_step(self) -> StepRecord:
        record = self._record if self._record is not None else self.new_record()
        losses = self._loss_sum.clone()
        if not self._deferred():
            record.losses = losses  # already averaged over ranks micro-batch by micro-batch
        else:
            record.losses = self.context.mean_over_ranks(losses)
        self._loss_sum.zero_()
        self._record, self._weights = None, None
        return record
