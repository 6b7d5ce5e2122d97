"""``StepRecord``: what one optimizer step did, the same fields in every step strategy.

The trainer keeps the last one as ``trainer.last_step`` and logs its diagnostics (per-task losses, weights,
gradient norms and cosines read off the Gram, masking statistics). Researchers who want the per-task gradient
rows themselves set ``record_task_gradients=True`` (they cost K×P memory per step kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class StepRecord:
    """One optimizer step.

    Attributes:
        step: the optimizer step (``state.global_step`` before the update).
        losses: ``(K,)`` float64, each task's loss over the whole step (all micro-batches, averaged over
            ranks), in the trainer's task order; ``None`` when the strategy has no per-task loss.
        weights: ``(K,)`` float64, the combiner's weights ``w`` of ``u = Σ_k w_k g_k`` (zero for a task left
            out of the step); ``None`` when the step was skipped before weighting.
        gram: ``(K, K)`` float64 Gram matrix ``G_ij = <g_i, g_j>`` the combiner saw (``None`` for loss-based
            combiners, which need no gradients).
        skipped: ``True`` when no parameter moved at this step.
        reason: why the step was skipped (or a task dropped), in words.
        nonfinite_tasks: tasks whose loss or gradient was NaN/inf this step.
        task_gradients: ``(K, P)`` per-task gradients of the shared parameters (``params`` mode, opt-in).
        combiner_info: the combiner's own diagnostics of its one call this step (solver iterations, ...).
        extras: strategy-specific figures (masking: ``masked_fraction`` or ``lambda``; ``l2_coefficient``).
    """

    step: int
    losses: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    gram: torch.Tensor | None = None
    skipped: bool = False
    reason: str | None = None
    nonfinite_tasks: list[str] = field(default_factory=list)
    task_gradients: torch.Tensor | None = None
    combiner_info: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str) -> StepRecord:
        """Mark the step skipped (no parameter moves) and say why."""
        self.skipped = True
        self.reason = reason
        return self
