"""IMTL-G, the gradient half of "Towards Impartial Multi-task Learning" (Liu et al., ICLR 2021).

Find ``u = Σ α_k g_k`` with ``Σ α_k = 1`` whose projections on every unit gradient ``g_k/||g_k||`` are equal:
``<u, g_k>/||g_k|| = c`` for all ``k``. On the Gram matrix this is ``G α = c·d`` with ``d_k = ||g_k|| = √G_kk``,
so ``α ∝ G⁺ d`` normalised to sum 1 — the paper's closed form ``α_{2:K} = g_1 Uᵀ (D Uᵀ)⁻¹`` written with the Gram
matrix, and with the pseudo-inverse for linearly dependent gradients (as generalised in TorchJD).

Guarantees: every task gets the same directional derivative, ``<u, g_k> = c·||g_k||``, ``c ≥ 0``; the *direction*
of ``u`` is invariant to rescaling any task's loss (its length is not, because of ``Σα = 1``). When no such
direction with ``c > 0`` exists in the span (``Σ (G⁺d)_k ≤ 0`` up to rounding, e.g. two opposite gradients), the
weights are 0 (``u = 0``) rather than an ascent direction.
"""

from __future__ import annotations

import numpy as np

from hf_mtl.combiners._min_norm import gram_scale
from hf_mtl.combiners.base import Combiner
from hf_mtl.combiners.registry import register_combiner


@register_combiner
class IMTLG(Combiner):
    """Impartial gradient: equal projection on every task's unit gradient."""

    name = "imtl_g"

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        scale = gram_scale(gram)
        if scale <= 0.0:
            self.last_info = {"zero_gradients": True}
            return np.zeros(num_tasks)
        normalized = gram / scale
        norms = np.sqrt(np.diag(normalized))
        direction = np.linalg.pinv(normalized, hermitian=True) @ norms
        total = float(direction.sum())
        # Σα = 1 needs Σ(G⁺d)_k > 0; otherwise the equal-projection direction has c ≤ 0 (no common descent).
        # Compared with ||d||²/K ≤ ||d||²/λ_max, the natural size of the sum (G has max diagonal 1).
        if total <= 1e-12 * float(norms @ norms) / num_tasks:
            self.last_info = {"no_impartial_direction": True}
            return np.zeros(num_tasks)
        self.last_info = {"no_impartial_direction": False}
        return direction / total
