"""Static linear scalarisation: ``u = Σ_k w_k g_k`` with fixed weights (plain summed loss by default)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hf_mtl.combiners.base import Combiner
from hf_mtl.combiners.registry import register_combiner


@register_combiner
class Linear(Combiner):
    """Fixed weights; ``weights=None`` means 1 for every task (the summed loss)."""

    name = "linear"
    needs_gradients = False

    def __init__(self, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.weights = None if weights is None else [float(w) for w in weights]
        if self.weights is not None:
            bad = [i for i, w in enumerate(self.weights) if not math.isfinite(w)]
            if bad:
                raise ValueError(f"linear combiner: weight of task index {bad[0]} is {self.weights[bad[0]]}.")

    def restricted(self, active: Sequence[int]) -> Linear:
        return self if self.weights is None else Linear([self.weights[i] for i in active])

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        if self.weights is None:
            return np.ones(num_tasks)
        if len(self.weights) != num_tasks:
            raise ValueError(f"linear combiner has {len(self.weights)} weights for {num_tasks} tasks.")
        return np.asarray(self.weights)
