"""GradNorm, "Gradient Normalization for Adaptive Loss Balancing" (Chen et al., ICML 2018).

Task weights ``w_k`` (state, start at 1) are learned so that each weighted gradient norm
``G_k = w_k ||g_k||`` (here ``||g_k|| = √G_kk``, from the Gram diagonal) approaches
``Ḡ · r_k^α``, where ``Ḡ = mean_k G_k``, ``r_k = L̃_k / mean(L̃)`` and ``L̃_k = L_k(t)/L_k(0)`` (the inverse
training rate). The GradNorm loss ``Σ_k |G_k - Ḡ r_k^α|`` is differentiated with the targets held constant
(the paper, Sec. 3.2): ``∂/∂w_k = sign(G_k - target_k) · ||g_k||``. After each call the weights take one gradient
step (option ``lr``), are clipped at 0 and renormalised to sum to ``K`` (the paper's renormalisation).

The returned weights are those of the current step (before the update), used for ``u = Σ w_k g_k``.
``L_k(0)`` is the loss at the first call; it must be positive. The paper takes ``||g_k||`` on the last shared
layer; here it is whatever gradients the trainer puts in the Gram matrix (all shared parameters or the
encoder output). ``alpha`` (default 1.5) sets the strength of the restoring force.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hf_mtl.combiners.base import Combiner, check_num_tasks, require_positive_losses
from hf_mtl.combiners.registry import register_combiner


@register_combiner
class GradNorm(Combiner):
    """Weights learned so that weighted gradient norms follow the tasks' relative training rates."""

    name = "gradnorm"
    needs_losses = True
    stateful = True

    def __init__(self, alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__()
        if not (math.isfinite(alpha) and alpha >= 0.0):
            raise ValueError(f"gradnorm: alpha must be a finite number ≥ 0, got {alpha}.")
        if not (math.isfinite(lr) and lr > 0.0):
            raise ValueError(f"gradnorm: lr must be > 0, got {lr}.")
        self.alpha = float(alpha)
        self.lr = float(lr)
        self.weights: np.ndarray | None = None
        self.initial_losses: np.ndarray | None = None

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        check_num_tasks(None if self.weights is None else self.weights.size, num_tasks, self.name)
        if self.weights is None:
            require_positive_losses(losses, self.name, "loss ratios L_k(t)/L_k(0) need positive initial losses")
            self.weights = np.ones(num_tasks)
            self.initial_losses = losses.copy()
        current = self.weights
        norms = np.sqrt(np.diag(gram))
        weighted = current * norms
        inverse_rate = losses / self.initial_losses
        relative = inverse_rate / inverse_rate.mean() if inverse_rate.mean() > 0.0 else np.ones(num_tasks)
        target = weighted.mean() * relative**self.alpha
        gradient = np.sign(weighted - target) * norms
        updated = np.maximum(current - self.lr * gradient, 0.0)
        total = updated.sum()
        self.weights = updated * (num_tasks / total) if total > 0.0 else np.ones(num_tasks)
        self.last_info = {"gradnorm_loss": float(np.abs(weighted - target).sum()), "next_weights": self.weights.tolist()}
        return current

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": None if self.weights is None else self.weights.tolist(),
            "initial_losses": None if self.initial_losses is None else self.initial_losses.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights = None if state["weights"] is None else np.asarray(state["weights"], dtype=np.float64)
        initial = state["initial_losses"]
        self.initial_losses = None if initial is None else np.asarray(initial, dtype=np.float64)
