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
``a R + (R·1/K)1ᵀ/a``, and the active-set min-norm solver (NNLS) solves it exactly. The root ``s* = ||g_{w(s*)}||`` in ``[min-norm of the hull, max_k ||g_k||]`` is found by
Brent's method (``scipy.optimize.brentq``) to relative precision ``1e-12``; ``w(s*)`` is the dual optimum.

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
