"""``encoder_output`` mode: the Gram of ``∂L_k/∂z`` (heads only), then one backward of ``Σ_k w_k L_k``.

``z`` is the shared encoder output; the representation Gram bounds the parameter Gram from above (the MGDA-UB
bound of Sener & Koltun 2018, arXiv 1810.04650), so the step costs one ordinary backward plus the heads.
Micro-batch Grams add up (each micro-batch's ``z`` is a separate block of the step's representation), and so do
ranks' Grams: a K×K all-reduce gives every rank the step's Gram. The combiner is called once, at the step's last
micro-batch. With one micro-batch the backward is a plain backward through the wrapped model (any engine); with
gradient accumulation earlier micro-batches are measured, then replayed with the weights
(:mod:`hf_mtl.steps.replay`) and the gradients averaged over ranks by one all-reduce.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hf_mtl.gradients import representation_gram
from hf_mtl.modeling import SHARED_GROUP
from hf_mtl.steps.base import StepStrategy, ordered_losses, register_step_strategy, solve_weights
from hf_mtl.steps.record import StepRecord
from hf_mtl.steps.replay import MicroBatchReplay
from hf_mtl.steps.weighting import weighted_loss

logger = logging.getLogger(__name__)


@register_step_strategy
class EncoderOutputStep(StepStrategy):
    """Representation Gram → combiner → one backward of the weighted loss."""

    name = "encoder_output"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._replay = MicroBatchReplay()
        self._gram = torch.zeros(self.context.num_tasks, self.context.num_tasks, dtype=torch.float64)
        self._loss_sum = torch.zeros(self.context.num_tasks, dtype=torch.float64)
        self._warned_diagonal = False
        self._record: StepRecord | None = None

    def micro_batch(self, model: nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
        context = self.context
        if self._record is None:
            self._record = self.new_record()
        direct = context.accumulation() == 1
        if not direct:
            if context.engine is not None:
                raise ValueError(
                    f"gradient_mode='encoder_output' with gradient accumulation replays micro-batches on whole "
                    f"parameters, which {context.engine} does not provide; use gradient_accumulation_steps=1."
                )
            self._replay.remember(inputs)
        runner = model if direct else context.unwrap(model)
        with self.module.capture_representations() as representations:
            outputs = runner(**inputs)
        losses = ordered_losses(outputs.task_losses, context)
        self._add_gram(losses, list(representations.values()), representations, retain_graph=direct)
        self._loss_sum += losses.detach().double().cpu() * context.micro_batch_scale
        if context.is_last_micro_batch:
            record = self._record
            gram = context.sum_over_ranks(self._gram)
            weights = solve_weights(self.combiner, context, record, context.mean_over_ranks(self._loss_sum), gram=gram)
            if weights is None:
                self._replay.clear()
            elif direct:
                context.backward(weighted_loss(outputs.task_losses, weights, context.task_names,
                                               outputs.soft_sharing_penalty))
            else:
                self._replay.backward_weighted(self.module, weights, context)
        return context.reported_loss(losses)

    def _add_gram(self, losses: torch.Tensor, groups: list[torch.Tensor], representations: Mapping[str, Any],
                  retain_graph: bool) -> None:
        context = self.context
        if SHARED_GROUP not in representations and context.num_tasks > 1 and not self._warned_diagonal:
            logger.warning(
                "gradient_mode='encoder_output' with disjoint task data: each task's loss depends only on its own "
                "examples' encoder outputs, so the Gram matrix is diagonal and the combiner sees only gradient "
                "norms, not conflicts. Use gradient_mode='params' to see task conflicts."
            )
            self._warned_diagonal = True
        # Each micro-batch loss enters the step's loss with 1/(micro-batches · ranks).
        grad_scale = context.grad_scale()
        share = context.micro_batch_scale / context.world_size
        gram = representation_gram([loss * grad_scale for loss in losses], groups, retain_graph=retain_graph)
        self._gram += gram.cpu() * (share / grad_scale) ** 2

    def end_step(self) -> StepRecord:
        record = self._record if self._record is not None else self.new_record()
        self._gram.zero_()
        self._loss_sum.zero_()
        self._record = None
        return record
