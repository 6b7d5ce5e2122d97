"""GradNorm, "Gradient Normalization for Adaptive Loss Balancing" (Chen et al., ICML 2018).

Task weights ``w_k`` (state, start at 1) are learned so that each weighted gradient norm
``G_k = w_k ||g_k||`` (here ``||g_k|| = √G_kk``, from the Gram diagonal) approaches
``Ḡ · r_k^α``, where ``Ḡ = mean_k G_k``, ``r_k = L̃_k / mean(L̃)`` and ``L̃_k = L_k(t)/L_k(0)`` (the inverse
training rate). The GradNorm loss ``Σ_k |G_k - Ḡ r_k^α|`` is differentiated with the targets held constant
(the paper, Sec. 3.2): ``∂/∂w_k = sign(G_k - target_k) · ||g_k||``. After each call the weights take one Adam
step with learning rate ``lr`` (``torch.optim.Adam``; in the paper the weights sit in the network's optimizer —
a plain gradient step would move each weight by ``lr·||g_k||`` and make the weights of tasks with large gradients
oscillate), are clipped at 0 and renormalised to sum to ``K`` (the paper's renormalisation).

The returned weights are those of the current step (before the update), used for ``u = Σ w_k g_k``.
``L_k(0)`` is the loss at the first call; it must be positive. The paper takes ``||g_k||`` on the last shared
layer; here it is whatever gradients the trainer puts in the Gram matrix (all shared parameters or the
encoder output). ``alpha`` (default 1.5) sets the strength of the restoring force.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_mtl.combiners.base import Combiner, check_num_tasks, require_positive_losses
from hf_mtl.combiners.registry import register_combiner

if TYPE_CHECKING:
    import torch


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
        self._weights: torch.Tensor | None = None
        self._optimizer: torch.optim.Adam | None = None
        self.initial_losses: np.ndarray | None = None

    def _create(self, num_tasks: int) -> None:
        import torch  # lazily: the combiners' module imports without torch (``hf-mtl combiners``)

        self._weights = torch.ones(num_tasks, dtype=torch.float64, requires_grad=True)
        self._optimizer = torch.optim.Adam([self._weights], lr=self.lr)

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        import torch  # lazily, as in base.py

        check_num_tasks(None if self._weights is None else self._weights.numel(), num_tasks, self.name)
        if self._weights is None:
            require_positive_losses(losses, self.name, "loss ratios L_k(t)/L_k(0) need positive initial losses")
            self._create(num_tasks)
            self.initial_losses = losses.copy()
        current = self._weights.detach().numpy().copy()
        norms = np.sqrt(np.diag(gram))
        weighted = current * norms
        inverse_rate = losses / self.initial_losses
        relative = inverse_rate / inverse_rate.mean() if inverse_rate.mean() > 0.0 else np.ones(num_tasks)
        target = weighted.mean() * relative**self.alpha
        self._optimizer.zero_grad()
        self._weights.grad = torch.as_tensor(np.sign(weighted - target) * norms)
        self._optimizer.step()
        with torch.no_grad():
            self._weights.clamp_(min=0.0)
            total = float(self._weights.sum())
            if total > 0.0:
                self._weights.mul_(num_tasks / total)
            else:
                self._weights.fill_(1.0)
        self.last_info = {
            "gradnorm_loss": float(np.abs(weighted - target).sum()),
            "next_weights": self._weights.detach().tolist(),
        }
        return current

    def state_dict(self) -> dict[str, Any]:
        if self._weights is None:
            return {"weights": None, "optimizer": None, "initial_losses": None}
        return {
            "weights": self._weights.detach().clone(),
            "optimizer": self._optimizer.state_dict(),
            "initial_losses": self.initial_losses.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch  # lazily, as in base.py

        if state["weights"] is None:
            self._weights = self._optimizer = self.initial_losses = None
            return
        self._create(state["weights"].numel())
        with torch.no_grad():
            self._weights.copy_(state["weights"])
        self._optimizer.load_state_dict(state["optimizer"])
        self.initial_losses = np.asarray(state["initial_losses"], dtype=np.float64)
