"""UPGrad, "Jacobian Descent for Multi-Objective Optimization" (Quinton & Rey 2024; TorchJD's ``UPGrad``).

Project every task gradient onto the dual cone ``{x : <x, g_j> ≥ 0 ∀j}`` and average the projections
(weighted by preferences ``p``, default ``1/K``). By the paper's Proposition 1 the projection of ``Jᵀe_i`` is
``Jᵀv_i`` with ``v_i = argmin_{v ≥ e_i} vᵀGv``; writing ``v = e_i + y``, ``y ≥ 0``, this is the non-negative
least-squares problem ``min_{y≥0} ||R(e_i + y)||`` with ``RᵀR = G`` — solved exactly by Lawson–Hanson
(``scipy.optimize.nnls``), K small problems on the Gram factor. Weights ``w = Σ_i p_i v_i``.

Guarantees: non-conflicting (``<u, g_j> ≥ 0`` for every task), linear under a global rescaling of the
gradients, permutation equivariant; each ``w_i ≥ p_i``. TorchJD's quadprog projector adds ``1e-4·I`` to the
normalised Gram for its QP solver; this solver needs no regularisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hf_mtl.combiners._min_norm import gram_factor, gram_scale, solve_nnls
from hf_mtl.combiners.base import Combiner
from hf_mtl.combiners.registry import register_combiner


@register_combiner
class UPGrad(Combiner):
    """Average of the task gradients projected onto the dual cone of all task gradients."""

    name = "upgrad"

    def __init__(self, preferences: Sequence[float] | None = None) -> None:
        super().__init__()
        self.preferences = None if preferences is None else [float(p) for p in preferences]

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        if self.preferences is None:
            preferences = np.full(num_tasks, 1.0 / num_tasks)
        elif len(self.preferences) != num_tasks:
            raise ValueError(f"upgrad: {len(self.preferences)} preferences for {num_tasks} tasks.")
        else:
            preferences = np.asarray(self.preferences)
        scale = gram_scale(gram)
        if scale <= 0.0:
            self.last_info = {"zero_gradients": True}
            return preferences
        factor = gram_factor(gram / scale)
        weights = np.zeros(num_tasks)
        for task in range(num_tasks):
            if preferences[task] == 0.0:
                continue
            lift = solve_nnls(factor, -factor[:, task])
            lift[task] += 1.0
            weights += preferences[task] * lift
        products = (gram / scale) @ weights
        self.last_info = {"min_product": float(products.min() * scale)}
        return weights
