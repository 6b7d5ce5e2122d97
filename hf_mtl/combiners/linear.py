"""Static linear scalarisation: ``u = Σ_k w_k g_k`` with fixed weights (plain summed loss by default)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hf_mtl.combiners.base import Combiner
from hf_mtl.combiners.registry import register_combiner


@register_combiner
class Linear(Combiner):
    """Fixed weights; ``weights=None`` means 1 for every task (the summed loss)."""

    name = "linear"
    needs_gradients = False

    def __init__(self, weights: Sequence[float] | None = None) -> None:
        self.weights = None if weights is None else [float(w) for w in weights]

    def __call__(self, gram: torch.Tensor | None = None, losses: torch.Tensor | None = None) -> torch.Tensor:
        ref = gram if gram is not None else losses
        if ref is None:
            raise ValueError("linear combiner needs `gram` or `losses` to know the number of tasks.")
        num_tasks = ref.shape[0]
        if self.weights is None:
            return torch.ones(num_tasks, dtype=ref.dtype, device=ref.device)
        if len(self.weights) != num_tasks:
            raise ValueError(f"linear combiner has {len(self.weights)} weights for {num_tasks} tasks.")
        return torch.tensor(self.weights, dtype=ref.dtype, device=ref.device)
