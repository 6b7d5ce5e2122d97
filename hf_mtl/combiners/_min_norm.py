"""Exact min-norm solvers on the Gram matrix shared by MGDA, primary/auxiliary, CAGrad, UPGrad and Nash-MTL.

The central problem (the "mixed" main/auxiliary problem of Su Jianlin 2022, "多任务学习漫谈（三）：分主次之序"
("Multi-task learning notes III: primary and auxiliary"), https://kexue.fm/archives/8907, eq. 11; see also
docs/combiners.md) is, for a set ``M`` of main tasks and the rest auxiliary,

    min_x  xᵀ G x   s.t.  x ≥ 0,  Σ_{i∈M} x_i = 1,                                  (P)

i.e. the shortest vector ``u = Σ x_i g_i`` with ``x_M`` in the simplex and ``x_aux ≥ 0``. ``M`` = all tasks is
MGDA's min-norm point of the convex hull; ``|M| = 1`` is the primary/auxiliary problem.

Exact solution by homogenisation: with ``y = t·x`` (``t = Σ_M y_i``),

    min_{y ≥ 0} ||R y||² + (1 - Σ_{i∈M} y_i)²,       RᵀR = G,

equals ``min_t t²·a + (1 - t)²`` over the value ``a = xᵀGx``; its minimum ``a/(1 + a)`` is increasing in ``a``,
so the non-negative least-squares solution ``y*`` gives the exact solution ``x* = y*/Σ_M y*`` of (P). That is an
ordinary NNLS problem (Lawson–Hanson active set, ``scipy.optimize.nnls``) of size (rank G + 1) × K, finite and
exact, with no penalty weight to tune.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

#: Relative rounding level of Gram-matrix arithmetic, per task (used as an absolute floor on tolerances).
ROUNDING = 16 * np.finfo(np.float64).eps


def gram_scale(gram: np.ndarray) -> float:
    """Largest squared gradient norm ``max_k G_kk`` (0 when every gradient is zero)."""
    return float(np.max(np.diag(gram)))


def gram_factor(gram: np.ndarray) -> np.ndarray:
    """A ``(r, K)`` matrix ``R`` with ``RᵀR = G`` (``r`` = numerical rank), from the eigendecomposition."""
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    keep = eigenvalues > eigenvalues[-1] * gram.shape[0] * np.finfo(np.float64).eps
    return np.sqrt(eigenvalues[keep])[:, None] * eigenvectors[:, keep].T


def solve_nnls(matrix: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``argmin_{y ≥ 0} ||A y - b||`` with a generous iteration cap (Lawson–Hanson is finite)."""
    return nnls(matrix, target, maxiter=max(50, 30 * matrix.shape[1]))[0]


def min_norm_active_set(gram: np.ndarray, main: np.ndarray) -> np.ndarray:
    """Exact solution ``x`` of (P) for the boolean mask ``main`` (at least one main task).

    A zero Gram matrix (every gradient zero) has every feasible point optimal: the uniform weights on the
    main tasks are returned.
    """
    scale = gram_scale(gram)
    if scale <= 0.0:
        return min_norm_from_factor(np.zeros((1, gram.shape[0])), main)
    return min_norm_from_factor(gram_factor(gram / scale), main)


def min_norm_from_factor(factor: np.ndarray, main: np.ndarray) -> np.ndarray:
    """(P) for the vectors given as the columns of ``factor`` (any ``R`` with ``RᵀR = G``)."""
    main = np.asarray(main, dtype=bool)
    if not main.any():
        raise ValueError("The min-norm problem needs at least one main task.")
    scale = float(np.max(np.einsum("ij,ij->j", factor, factor)))
    if scale <= 0.0:
        return main / main.sum()
    matrix = np.vstack([factor / np.sqrt(scale), main.astype(np.float64)[None, :]])
    target = np.zeros(matrix.shape[0])
    target[-1] = 1.0
    homogeneous = solve_nnls(matrix, target)
    return homogeneous / homogeneous[main].sum()


def affine_min_norm(gram_face: np.ndarray) -> np.ndarray:
    """Minimiser of ``βᵀ G_S β`` over the affine hull ``Σβ = 1`` (a face's KKT system, least squares if singular)."""
    size = gram_face.shape[0]
    kkt = np.ones((size + 1, size + 1))
    kkt[:size, :size] = gram_face
    kkt[size, size] = 0.0
    rhs = np.zeros(size + 1)
    rhs[size] = 1.0
    try:
        solution = np.linalg.solve(kkt, rhs)
    except np.linalg.LinAlgError:
        solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    return solution[:size]


def simplex_duality_gap(gram: np.ndarray, alpha: np.ndarray) -> float:
    """Frank–Wolfe gap ``αᵀGα - min_i (Gα)_i = <u, u - g_τ>`` (an upper bound of ``½(||u||² - ||u*||²)``)."""
    products = gram @ alpha
    return float(alpha @ products - products.min())
