"""CAGrad, "Conflict-Averse Gradient Descent for Multi-task Learning" (Liu et al., NeurIPS 2021).

Maximise the worst task's improvement in a ball around the average gradient ``g_0 = (1/K) Σ g_k``:
``max_{||d - g_0|| ≤ c||g_0||} min_k <g_k, d>``. Its dual (Algorithm 1) is

    min_{w ∈ simplex}  <g_w, g_0> + c||g_0||·||g_w||,   g_w = Σ w_k g_k,

and ``d = g_0 + c||g_0||/||g_w|| · g_w``, i.e. weights ``1/K + c||g_0||/||g_w|| · w``, optionally divided by
``1 + c²`` (``rescale=1``, the authors' default) or ``1 + c`` (``rescale=2``); ``rescale=0`` returns ``d``
itself (TorchJD's choice). ``c = 0`` is plain gradient averaging.

Solver (exact, no cvxpy / SLSQP): with ``r = c||g_0||`` and ``||v|| = min_{s>0} (||v||²/(2s) + s/2)``, the dual
equals ``min_s H(s)``, ``H(s) = min_w <g_w, g_0> + r||g_w||²/(2s) + rs/2``, a convex function of ``s`` whose
derivative has the sign of ``s - ||g_{w(s)}||``. For fixed ``s`` the inner problem is a min-norm point: with
``a = √(r/s)``, ``<g_w, g_0> + a²||g_w||²/2 = ½||Σ w_k (a g_k + g_0/a)||² - const``: the min-norm point of the
shifted vectors ``a g_k + g_0/a``. With a factor ``RᵀR = G`` (one eigendecomposition) their coordinates are
``a R + (R·1/K)1ᵀ/a``, and the active-set min-norm solver (NNLS) solves it exactly. Its support gives the
answer in closed form (:func:`fixed_point_on_support`): on a fixed support the inner solution is affine in ``s``,
and the optimal ``s* = ||g_{w(s*)}||`` is the root of a quadratic, accepted only if it passes the optimality
check; otherwise the next support is taken at the new ``s``. Usually one or two NNLS solves suffice; after six,
Brent's method (``scipy.optimize.brentq``, relative precision 1e-12) on the bracket
``[min-norm of the hull, max_k ||g_k||]`` is the safeguard.

If the optimum has ``g_w ≈ 0`` (the hull contains 0: Pareto-stationary) the weights are 0, as in TorchJD.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from hf_mtl.combiners._min_norm import gram_factor, gram_scale, min_norm_from_factor
from hf_mtl.combiners.base import Combiner
from hf_mtl.combiners.registry import register_combiner

#: ``||g_w||`` below this fraction of the largest gradient norm counts as zero (Pareto-stationary).
STATIONARY = 1e-9
#: support guesses before falling back to Brent's method (one or two suffice in practice).
MAX_SUPPORT_ROUNDS = 6


def fixed_point_on_support(
    gram: np.ndarray, products: np.ndarray, radius: float, support: np.ndarray
) -> tuple[np.ndarray | None, float | None]:
    """Closed-form dual optimum if ``support`` is the optimal support, else ``(None, t or None)``.

    With ``t = s/r`` the inner problem is ``min_{w∈Δ} wᵀGw + 2t qᵀw``; on the affine hull of a fixed support its
    KKT system is linear, so ``w(t) = w₀ + t w₁`` and ``‖g_w‖² = A + 2Bt + Ct²``. The fixed point ``s = ‖g_w‖``
    is the positive root of ``(r² − C)t² − 2Bt − A = 0``. The result is accepted only if ``w ≥ 0`` and the
    optimality conditions hold off the support (``(Gw + tq)_i ≥ μ``), which makes it the exact optimum.
    """
    size = support.size
    kkt = np.ones((size + 1, size + 1))
    kkt[:size, :size] = gram[np.ix_(support, support)]
    kkt[size, size] = 0.0
    rhs = np.zeros((size + 1, 2))
    rhs[size, 0] = 1.0
    rhs[:size, 1] = -products[support]
    try:
        solution = np.linalg.solve(kkt, rhs)
    except np.linalg.LinAlgError:
        return None, None
    base, slope = solution[:size, 0], solution[:size, 1]
    face = kkt[:size, :size]
    constant, linear, quadratic = base @ face @ base, base @ face @ slope, slope @ face @ slope
    lead = radius**2 - quadratic
    if lead <= 0.0:
        return None, None
    t = (linear + math.sqrt(max(linear**2 + constant * lead, 0.0))) / lead
    if t <= 0.0:
        return None, None
    weights = np.zeros(gram.shape[0])
    weights[support] = base + t * slope
    if weights.min() < -1e-12:
        return None, t
    weights = np.maximum(weights, 0.0)
    weights /= weights.sum()
    gradient = gram @ weights + t * products
    level = float(gradient[support].mean())
    if gradient.min() < level - 1e-10 * (1.0 + float(np.abs(gradient).max())):
        return None, t
    return weights, t


@register_combiner
class CAGrad(Combiner):
    """Conflict-averse gradient: best worst-case improvement near the average gradient."""

    name = "cagrad"

    def __init__(self, c: float = 0.4, rescale: int = 1) -> None:
        super().__init__()
        if not (math.isfinite(c) and c >= 0.0):
            raise ValueError(f"cagrad: c must be a finite number ≥ 0, got {c}.")
        if rescale not in (0, 1, 2):
            raise ValueError(f"cagrad: rescale must be 0 (none), 1 (÷(1+c²)) or 2 (÷(1+c)), got {rescale}.")
        self.c = float(c)
        self.rescale = int(rescale)

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        mean = np.full(num_tasks, 1.0 / num_tasks)
        divisor = (1.0, 1.0 + self.c**2, 1.0 + self.c)[self.rescale]
        scale = gram_scale(gram)
        if scale <= 0.0:
            self.last_info = {"zero_gradients": True}
            return mean / divisor
        gram = gram / scale
        products = gram @ mean  # q_k = <g_k, g_0>
        mean_norm_sq = max(float(mean @ products), 0.0)
        radius = self.c * math.sqrt(mean_norm_sq)
        if radius <= 0.0:
            self.last_info = {"radius": 0.0}
            return mean / divisor
        everyone = np.ones(num_tasks, dtype=bool)
        factor = gram_factor(gram)
        mean_coordinates = factor @ mean

        def dual_weights(s: float) -> np.ndarray:
            a = math.sqrt(radius / s)
            return min_norm_from_factor(a * factor + mean_coordinates[:, None] / a, everyone)

        def norm_of(w: np.ndarray) -> float:
            return float(np.linalg.norm(factor @ w))

        evaluations = 0

        def excess(s: float) -> float:  # sign of H'(s)
            nonlocal evaluations
            evaluations += 1
            return s - norm_of(dual_weights(s))

        lower = max(norm_of(min_norm_from_factor(factor, everyone)), STATIONARY)
        upper = math.sqrt(float(np.max(np.diag(gram))))
        s_star, weights = None, None
        s = min(max(math.sqrt(mean_norm_sq), lower), upper)
        for _ in range(MAX_SUPPORT_ROUNDS):
            evaluations += 1
            guess = dual_weights(s)
            exact, candidate = fixed_point_on_support(gram, products, radius, np.flatnonzero(guess > 0.0))
            if exact is not None:
                weights = exact
                break
            s = min(max(radius * candidate if candidate is not None else norm_of(guess), lower), upper)
        if weights is None:  # safeguard: bracketing root search on the convex dual
            if excess(lower) >= 0.0:  # ||g_w*|| ≤ lower
                if lower <= STATIONARY:
                    self.last_info = {"pareto_stationary": True, "evaluations": evaluations}
                    return np.zeros(num_tasks)
                s_star = lower
            elif excess(upper) <= 0.0:
                s_star = upper
            else:
                s_star = brentq(excess, lower, upper, xtol=1e-14, rtol=1e-12, maxiter=200)
            weights = dual_weights(s_star)
        norm = norm_of(weights)
        if norm <= STATIONARY:
            self.last_info = {"pareto_stationary": True, "evaluations": evaluations}
            return np.zeros(num_tasks)
        self.last_info = {"pareto_stationary": False, "evaluations": evaluations, "dual_norm": norm * math.sqrt(scale)}
        return (mean + radius / norm * weights) / divisor
