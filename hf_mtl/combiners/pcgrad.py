"""PCGrad, "Gradient Surgery for Multi-Task Learning" (Yu et al. 2020), on the Gram matrix.

For every task ``i``, start from ``g_i^PC = g_i`` and, for the other tasks ``j`` in a random order, remove the
conflicting component: if ``<g_i^PC, g_j> < 0`` then ``g_i^PC -= <g_i^PC, g_j>/||g_j||² · g_j`` (Algorithm 1).
Each ``g_i^PC`` stays a linear combination ``Σ_j c_ij g_j`` of the original gradients, and
``<g_i^PC, g_j> = (G c_i)_j``, so the surgery runs on the K×K Gram matrix alone. The result is
``u = Σ_i g_i^PC`` (``reduction="sum"``, the paper's Algorithm 1, also TorchJD's) or its mean
(``reduction="mean"``, the authors' released code); the returned weights are ``w = Σ_i c_i`` (or the mean).

The random order comes from a seeded NumPy generator (option ``seed``) whose state is in :meth:`state_dict`,
so a resumed run draws the same orders. A zero gradient is never projected on.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from hf_mtl.combiners.base import Combiner
from hf_mtl.combiners.registry import register_combiner

REDUCTIONS = ("sum", "mean")


@register_combiner
class PCGrad(Combiner):
    """Projecting conflicting gradients, in random task order."""

    name = "pcgrad"
    stateful = True

    def __init__(self, seed: int = 0, reduction: Literal["sum", "mean"] = "sum") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"pcgrad: unknown reduction {reduction!r}; choose one of {REDUCTIONS}.")
        self.seed = int(seed)
        self.reduction = reduction
        self._generator = np.random.default_rng(self.seed)

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        diag = np.diag(gram)
        total = np.zeros(num_tasks)
        projections = 0
        for task in range(num_tasks):
            coefficients = np.zeros(num_tasks)
            coefficients[task] = 1.0
            products = gram[task].copy()  # <g_task^PC, g_j> for every j, updated with each projection
            for other in self._generator.permutation(np.delete(np.arange(num_tasks), task)).tolist():
                product = products[other]
                if product < 0.0 and diag[other] > 0.0:
                    step = -product / diag[other]
                    coefficients[other] += step
                    products += step * gram[other]
                    projections += 1
            total += coefficients
        self.last_info = {"projections": projections}
        return total / num_tasks if self.reduction == "mean" else total

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._generator.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._generator.bit_generator.state = state["generator"]
