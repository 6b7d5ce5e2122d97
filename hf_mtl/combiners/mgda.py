"""MGDA: the min-norm point of the convex hull of the task gradients (Désidéri 2012; Sener & Koltun 2018).

``min_{α ∈ simplex} ||Σ α_k g_k||²`` on the Gram matrix; ``u = Σ α_k g_k``. At the optimum
``<u, g_i> ≥ ||u||²`` for every task, so no task's loss rises to first order (Su Jianlin 2022,
"多任务学习漫谈（二）：行梯度之事" ("Multi-task learning notes II: gradients"), blog post,
https://kexue.fm/archives/8896, section "对偶问题", the dual problem; "Su 2022 (II)" below, equation numbers
are the post's).

Variants (all on the K×K Gram matrix, never on the gradients themselves):

* ``"frank_wolfe"`` (default): Frank–Wolfe — add the vertex ``τ = argmin_i <g_i, u>`` (Sener & Koltun,
  Algorithm 2; Su 2022 (II) eq. 18) — with the exact line search carried out over all active vertices (Wolfe's
  1976 minor cycle: the min-norm point of their affine hull, pulled back into the simplex along the segment if it
  leaves it). With two active vertices this is Su 2022 (II)'s closed form ``γ = <u - g_τ, u> / ||u - g_τ||²``
  clipped to [0, 1]. Plain Frank–Wolfe converges like 1/t; this terminates after finitely many steps. Stops when
  the duality gap ``<u, u - g_τ> ≤ tol·||u||²`` (i.e. every ``<u, g_i> ≥ (1 - tol)||u||²``; plus a rounding
  floor) or at ``max_iter``; ``last_info`` reports iterations, minor steps and the gap.
* ``"averaged"``: Su 2022 (II)'s smoothed iteration, step ``1/(t+1)`` instead of the line search: ``α`` is the
  running average of the chosen vertices (Su 2022 (II) eq. 12, the simplified Frank–Wolfe).
* ``"softmax"``: ``α = softmax(β)`` and plain gradient descent on ``β`` with step ``lr`` (Su 2022 (II),
  "去约束化", removing the constraint). Interior-only (``α > 0``), so it approaches boundary solutions slowly.
* ``"active_set"``: the exact finite solver of :mod:`hf_mtl.combiners._min_norm` (Lawson–Hanson NNLS on the
  homogenised problem); no tolerance involved.

Normalisation (Sener & Koltun's code, ``gradient_normalizers``): ``"none"``; ``"l2"`` divides ``g_k`` by
``||g_k||``; ``"loss"`` by ``L_k``; ``"loss+"`` by ``L_k·||g_k||``. The solver runs on the normalised Gram
``G_ij / (n_i n_j)`` and the scaling is folded into the returned weights, ``w_k = α_k / n_k``, so that
``u = Σ w_k g_k`` is always formed from the raw gradients. (The reference code instead applies ``α`` to the raw
losses.) A task whose normaliser is 0 (zero gradient) gets weight 0; a non-positive loss with ``"loss"``
normalisation is a ValueError. With ``"none"`` the weights sum to 1 and ``u`` scales linearly with the
gradients; with ``"l2"`` ``u`` is invariant to a global rescaling.

A zero Gram matrix returns uniform weights (every point of the hull is the zero vector).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from hf_mtl.combiners._min_norm import (
    ROUNDING,
    affine_min_norm,
    gram_scale,
    min_norm_active_set,
    simplex_duality_gap,
)
from hf_mtl.combiners.base import Combiner, require_positive_losses
from hf_mtl.combiners.registry import register_combiner

Variant = Literal["frank_wolfe", "averaged", "softmax", "active_set"]
Normalization = Literal["none", "l2", "loss", "loss+"]
VARIANTS = ("frank_wolfe", "averaged", "softmax", "active_set")
NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def _converged(gap: float, value: float, tol: float, num_tasks: int) -> bool:
    """Relative duality gap, with an absolute floor at rounding level (the Gram matrix has max diagonal 1)."""
    return gap <= tol * value + ROUNDING * num_tasks


def frank_wolfe(gram: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, dict]:
    """Frank–Wolfe with Wolfe's (1976) corrective minor cycles, on a Gram matrix with max diagonal 1.

    Each major iteration is a Frank–Wolfe step: add the vertex ``τ = argmin_i <g_i, u>`` to the active set.
    The exact line search is then done over the whole active set: move to the min-norm point of its affine
    hull, or, if that point leaves the simplex, as far toward it as the simplex allows (dropping the vertex
    whose weight hits 0) and repeat. With two active vertices this is the closed form
    ``γ = <u - g_τ, u> / ||u - g_τ||²``. The number of major iterations is finite (Wolfe 1976).
    """
    num_tasks = gram.shape[0]
    diag = np.diag(gram)
    active = [int(np.argmin(diag))]
    weights = np.ones(1)
    minor_steps = 0
    iteration = 0
    while True:
        products = gram[:, active] @ weights  # <g_i, u> for every task
        value = float(weights @ products[active])  # ||u||²
        toward = int(np.argmin(products))
        gap = value - float(products[toward])
        if _converged(gap, value, tol, num_tasks) or iteration >= max_iter or toward in active:
            break
        iteration += 1
        active.append(toward)
        weights = np.append(weights, 0.0)
        while True:  # minor cycle: exact minimisation over the active face
            minor_steps += 1
            target = affine_min_norm(gram[np.ix_(active, active)])
            if np.all(target > 0.0):
                weights = target
                break
            decreasing = np.flatnonzero(target < weights)
            ratios = weights[decreasing] / (weights[decreasing] - target[decreasing])
            step = min(1.0, float(ratios.min())) if decreasing.size else 1.0
            weights = weights + step * (target - weights)
            keep = weights > 0.0
            if decreasing.size:  # the vertex that blocked the step leaves, whatever the rounding
                keep[decreasing[np.argmin(ratios)]] = False
            active = [a for a, k in zip(active, keep, strict=True) if k]
            weights = weights[keep]
            weights /= weights.sum()
    alpha = np.zeros(num_tasks)
    alpha[active] = weights
    return alpha, {"iterations": iteration, "minor_steps": minor_steps, "duality_gap": gap}


def averaged_frank_wolfe(gram: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, dict]:
    """Article 001 eq. 12: ``α_t = (1 - 1/(t+1)) α_{t-1} + 1/(t+1) e_τ`` from the uniform ``α_0``."""
    num_tasks = gram.shape[0]
    alpha = np.full(num_tasks, 1.0 / num_tasks)
    products = gram @ alpha
    iteration = 0
    while True:
        value = float(alpha @ products)
        toward = int(np.argmin(products))
        gap = value - float(products[toward])
        if _converged(gap, value, tol, num_tasks) or iteration >= max_iter:
            break
        iteration += 1
        step = 1.0 / (iteration + 1)
        alpha *= 1.0 - step
        alpha[toward] += step
        products = (1.0 - step) * products + step * gram[:, toward]
    return alpha, {"iterations": iteration, "duality_gap": gap}


def softmax_descent(gram: np.ndarray, tol: float, max_iter: int, lr: float) -> tuple[np.ndarray, dict]:
    """Gradient descent on ``β`` for ``||Σ softmax(β)_k g_k||²``: ``∇_β = 2 α ⊙ (Gα - αᵀGα)``."""
    num_tasks = gram.shape[0]
    logits = np.zeros(num_tasks)
    iteration = 0
    while True:
        alpha = np.exp(logits - logits.max())
        alpha /= alpha.sum()
        products = gram @ alpha
        value = float(alpha @ products)
        gap = value - float(products.min())
        if _converged(gap, value, tol, num_tasks) or iteration >= max_iter:
            break
        iteration += 1
        logits -= lr * 2.0 * alpha * (products - value)
    return alpha, {"iterations": iteration, "duality_gap": gap}


def gradient_normalizers(gram: np.ndarray, losses: np.ndarray | None, normalization: str, name: str) -> np.ndarray:
    """Per-task divisors ``n_k`` of Sener & Koltun's ``gradient_normalizers`` (1 for ``"none"``)."""
    norms = np.sqrt(np.diag(gram))
    if normalization == "none":
        return np.ones(gram.shape[0])
    if normalization == "l2":
        return norms
    if losses is None:
        raise ValueError(f"Combiner {name!r} with normalization={normalization!r} needs `losses`.")
    require_positive_losses(losses, name, f"normalization={normalization!r} divides each gradient by its loss")
    return losses if normalization == "loss" else losses * norms


@register_combiner
class MGDA(Combiner):
    """Multiple-gradient descent: the min-norm element of the convex hull of the task gradients."""

    name = "mgda"

    def __init__(
        self,
        variant: Variant = "frank_wolfe",
        normalization: Normalization = "none",
        tol: float = 1e-10,
        max_iter: int = 1000,
        lr: float = 1.0,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"mgda: unknown variant {variant!r}; choose one of {VARIANTS}.")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"mgda: unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}.")
        if not (math.isfinite(tol) and tol >= 0.0):
            raise ValueError(f"mgda: tol must be a finite number ≥ 0, got {tol}.")
        if int(max_iter) < 1:
            raise ValueError(f"mgda: max_iter must be ≥ 1, got {max_iter}.")
        if not (math.isfinite(lr) and lr > 0.0):
            raise ValueError(f"mgda: lr must be > 0, got {lr}.")
        self.variant = variant
        self.normalization = normalization
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.lr = float(lr)

    @property
    def needs_losses(self) -> bool:  # type: ignore[override]
        return self.normalization in ("loss", "loss+")

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        normalizers = gradient_normalizers(gram, losses, self.normalization, self.name)
        inverse = np.divide(1.0, normalizers, out=np.zeros(num_tasks), where=normalizers > 0.0)
        scaled = gram * np.outer(inverse, inverse)
        scale = gram_scale(scaled)
        if scale <= 0.0:
            alpha = np.full(num_tasks, 1.0 / num_tasks)
            self.last_info = {"iterations": 0, "duality_gap": 0.0, "converged": True, "zero_gradients": True}
            return alpha * inverse
        scaled = scaled / scale
        if self.variant == "active_set":
            alpha = min_norm_active_set(scaled, np.ones(num_tasks, dtype=bool))
            info = {"iterations": 0, "duality_gap": simplex_duality_gap(scaled, alpha)}
        elif self.variant == "frank_wolfe":
            alpha, info = frank_wolfe(scaled, self.tol, self.max_iter)
        elif self.variant == "averaged":
            alpha, info = averaged_frank_wolfe(scaled, self.tol, self.max_iter)
        else:
            alpha, info = softmax_descent(scaled, self.tol, self.max_iter, self.lr)
        value = float(alpha @ scaled @ alpha)
        info["converged"] = bool(_converged(info["duality_gap"], value, self.tol, num_tasks))
        info["norm_squared"] = value * scale  # ||u||² of the (normalised) gradients
        info["duality_gap"] *= scale
        self.last_info = info
        return alpha * inverse
