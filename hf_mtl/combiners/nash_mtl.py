"""Nash-MTL, "Multi-Task Learning as a Bargaining Game" (Navon et al., ICML 2022).

The Nash bargaining solution ``u = Σ α_k g_k`` maximises ``Σ log <u, g_k>`` within a ball; it satisfies
``G α = 1/α`` (elementwise, ``α > 0``; the paper's Theorem 5.1). That system is the stationarity condition of
the strictly convex

    f(α) = ½ αᵀGα - Σ_k log α_k,      ∇f = Gα - 1/α,   ∇²f = G + diag(1/α²),

so it is solved here directly, without cvxpy: ``f`` is self-concordant (a quadratic plus a log barrier), so
Newton's method with Nesterov's damped step ``1/(1 + λ)`` (``λ`` the Newton decrement) stays inside ``α > 0``,
converges from any start and quadratically near the solution; it stops when ``max_k |α_k (Gα)_k - 1| ≤ tol``
or the decrement reaches rounding level. (The paper's code instead solves a sequence of
convex approximations with cvxpy on ``G/||G||_F`` for a few iterations, which rescales ``α`` by ``||G||_F^{1/2}``;
with the norm cap below active, as in its experiments, both give the same update.)

Then ``||u||² = αᵀGα = K``; ``u`` is rescaled to norm ``max_norm`` when longer (default 1.0, the paper's
gradient clipping; 0 disables it). ``u`` (before capping) is invariant to rescaling any task's gradient.

Degenerate inputs: a task with a zero gradient can neither gain nor lose and gets weight 0 (it is left out of
the bargaining). If 0 is in the convex hull of the remaining gradients (Pareto-stationary: no direction
improves every task, e.g. two opposite gradients), ``f`` is unbounded below and no solution exists: the weights
are 0 (``u = 0``) and ``last_info["pareto_stationary"]`` is set.
"""

from __future__ import annotations

import math

import numpy as np

from hf_mtl.combiners._min_norm import gram_scale, min_norm_active_set
from hf_mtl.combiners.base import Combiner
from hf_mtl.combiners.registry import register_combiner

#: squared min-norm of the hull below this fraction of the largest squared gradient norm counts as 0.
STATIONARY = 1e-14


def solve_bargaining(gram: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, dict]:
    """Damped Newton for ``Gα = 1/α`` (Gram matrix with max diagonal 1), Nesterov's step ``1/(1 + λ)``.

    ``λ = sqrt(Δᵀ∇²f Δ)`` is the Newton decrement. For a self-concordant ``f`` the damped step stays inside
    ``α > 0`` and decreases ``f``; once ``λ < 1/4`` the full step converges quadratically. Stops when the residual
    ``max_k |α_k (Gα)_k - 1| ≤ tol``, or when ``λ² ≤ 1e-24`` (the remaining decrease of ``f`` is below rounding).
    """
    alpha = 1.0 / np.sqrt(np.diag(gram))  # exact when the gradients are orthogonal
    alpha *= math.sqrt(gram.shape[0] / float(alpha @ gram @ alpha))  # best multiple: αᵀGα = K, as at the solution
    iteration = 0
    decrement_sq = math.inf
    while True:
        products = gram @ alpha
        residual = float(np.max(np.abs(alpha * products - 1.0)))
        if residual <= tol or iteration >= max_iter:
            break
        gradient = products - 1.0 / alpha
        newton = -np.linalg.solve(gram + np.diag(1.0 / alpha**2), gradient)
        decrement_sq = max(-float(gradient @ newton), 0.0)
        if decrement_sq <= 1e-24:
            break
        iteration += 1
        decrement = math.sqrt(decrement_sq)
        alpha = alpha + (newton if decrement < 0.25 else newton / (1.0 + decrement))
    converged = residual <= tol or decrement_sq <= 1e-24
    return alpha, {"iterations": iteration, "residual": residual, "converged": converged}


@register_combiner
class NashMTL(Combiner):
    """Nash bargaining between tasks: ``Gα = 1/α``."""

    name = "nash_mtl"

    def __init__(self, max_norm: float = 1.0, tol: float = 1e-10, max_iter: int = 100) -> None:
        super().__init__()
        if not (math.isfinite(max_norm) and max_norm >= 0.0):
            raise ValueError(f"nash_mtl: max_norm must be a finite number ≥ 0 (0 disables), got {max_norm}.")
        if not (math.isfinite(tol) and tol > 0.0):
            raise ValueError(f"nash_mtl: tol must be > 0, got {tol}.")
        if int(max_iter) < 1:
            raise ValueError(f"nash_mtl: max_iter must be ≥ 1, got {max_iter}.")
        self.max_norm = float(max_norm)
        self.tol = float(tol)
        self.max_iter = int(max_iter)

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        weights = np.zeros(num_tasks)
        scale = gram_scale(gram)
        active = np.diag(gram) > 0.0
        if scale <= 0.0:
            self.last_info = {"pareto_stationary": True, "zero_gradients": True}
            return weights
        sub = gram[np.ix_(active, active)] / scale
        hull = min_norm_active_set(sub, np.ones(sub.shape[0], dtype=bool))
        if float(hull @ sub @ hull) <= STATIONARY:
            self.last_info = {"pareto_stationary": True}
            return weights
        alpha, info = solve_bargaining(sub, self.tol, self.max_iter)
        weights[active] = alpha / math.sqrt(scale)
        norm = math.sqrt(max(float(weights @ gram @ weights), 0.0))
        if self.max_norm > 0.0 and norm > self.max_norm:
            weights *= self.max_norm / norm
        self.last_info = {"pareto_stationary": False, "update_norm": norm, **info}
        return weights
