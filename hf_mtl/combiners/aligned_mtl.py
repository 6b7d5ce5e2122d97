"""Aligned-MTL, "Independent Component Alignment for Multi-Task Learning" (Senushkin et al., CVPR 2023).

Make the gradient system well conditioned before combining it. With ``J = U Σ Wᵀ`` (rows ``g_k``) and
``G = JJᵀ = V Λ Vᵀ`` of rank ``r``, the aligned gradients are the rows of ``Ĵ = √σ·U Wᵀ = B J`` with
``B = √σ V_r Λ_r^{-1/2} V_rᵀ`` (computed from the Gram matrix alone). Their Gram matrix is ``σ V_r V_rᵀ``:
orthogonal, equal norms, condition number 1. ``σ`` is the smallest non-zero eigenvalue (``scale_mode="min"``,
the paper), the median (``"median"``) or the mean (``"rmse"``, the authors' code). The update is
``u = Ĵᵀ p = Σ_k (B p)_k g_k`` for task preferences ``p`` (default ``1/K`` each, TorchJD's default), so the
weights are ``w = B p``. Eigenvalues below ``λ_max·K·eps`` count as zero.

Guarantees: ``w`` is invariant to a global rescaling of the gradients (so ``u`` scales linearly); permutation
equivariant. A zero Gram matrix gives ``w = p``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from hf_mtl.combiners._min_norm import gram_scale
from hf_mtl.combiners.base import Combiner
from hf_mtl.combiners.registry import register_combiner

SCALE_MODES = ("min", "median", "rmse")


@register_combiner
class AlignedMTL(Combiner):
    """Combine the gradients after aligning them to an orthogonal, equal-norm system."""

    name = "aligned_mtl"

    def __init__(
        self, scale_mode: Literal["min", "median", "rmse"] = "min", preferences: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"aligned_mtl: unknown scale_mode {scale_mode!r}; choose one of {SCALE_MODES}.")
        self.scale_mode = scale_mode
        self.preferences = None if preferences is None else [float(p) for p in preferences]

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        if self.preferences is None:
            preferences = np.full(num_tasks, 1.0 / num_tasks)
        elif len(self.preferences) != num_tasks:
            raise ValueError(f"aligned_mtl: {len(self.preferences)} preferences for {num_tasks} tasks.")
        else:
            preferences = np.asarray(self.preferences)
        scale = gram_scale(gram)
        if scale <= 0.0:
            self.last_info = {"rank": 0}
            return preferences
        eigenvalues, eigenvectors = np.linalg.eigh(gram / scale)
        keep = eigenvalues > eigenvalues[-1] * num_tasks * np.finfo(np.float64).eps
        eigenvalues, eigenvectors = eigenvalues[keep], eigenvectors[:, keep]
        if self.scale_mode == "min":
            sigma = eigenvalues.min()
        elif self.scale_mode == "median":
            sigma = np.median(eigenvalues)
        else:
            sigma = eigenvalues.mean()
        balance = np.sqrt(sigma) * (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T
        self.last_info = {"rank": int(keep.sum()), "condition_number": float(eigenvalues.max() / eigenvalues.min())}
        return balance @ preferences
