"""Turning weights into a loss to differentiate: ``Σ_k w_k L_k`` over the tasks with a non-zero weight."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def weighted_loss(
    task_losses: Mapping[str, torch.Tensor], weights: torch.Tensor, task_names: Sequence[str],
    penalty: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Σ_k w_k L_k (+ penalty)``; a task with weight 0 is left out entirely, so a NaN loss dropped from the
    step never enters the graph as ``0 · NaN``."""
    used = torch.nonzero(weights).flatten().tolist()
    reference = next(iter(task_losses.values()))
    total = sum((float(weights[k]) * task_losses[task_names[k]] for k in used), reference.new_zeros(()))
    return total if penalty is None else total + penalty
