"""FAMO, "FAMO: Fast Adaptive Multitask Optimization" (Liu, Liu, Stone & Liu, NeurIPS 2023).

Loss-based, O(1) per step: task logits ``ξ`` (state), ``z = softmax(ξ)``, and the update minimises
``Σ_k z_k log(L_k - L_k^min)``, whose gradient is ``Σ_k w_k ∇L_k`` with

    w_k = (z_k / D_k) / Σ_i (z_i / D_i),   D_k = L_k - L_k^min + ε   (so Σ w_k = 1; the authors' ``c``).

After the parameters moved, the logits follow the observed decrease of the log losses,
``δ_k = log D_k(before) - log D_k(after)``: the gradient of ``ξ`` is ``(diag z - z zᵀ) δ`` (the softmax Jacobian
transposed applied to ``δ``), taken by Adam with learning rate ``w_lr`` and weight decay ``gamma`` (the
authors' defaults 0.025 and 0.01; ``torch.optim.Adam``).

The authors re-evaluate the same batch after the step to get ``D(after)``. Here the combiner sees one loss
vector per step, so ``D(after)`` is the next call's losses (next batch): at each call the logits are first
updated with the change from the previous call, then the weights are formed. ``min_losses`` (default 0) are
the known lower bounds ``L^min``; a loss below its bound is a ValueError.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_mtl.combiners.base import Combiner, check_num_tasks
from hf_mtl.combiners.registry import register_combiner

if TYPE_CHECKING:
    import torch

EPSILON = 1e-8


@register_combiner
class FAMO(Combiner):
    """Fast adaptive multitask optimisation: balance the tasks' log-loss decrease rates."""

    name = "famo"
    needs_gradients = False
    needs_losses = True
    stateful = True

    def __init__(self, w_lr: float = 0.025, gamma: float = 0.01, min_losses: Sequence[float] | None = None) -> None:
        super().__init__()
        if not (math.isfinite(w_lr) and w_lr > 0.0):
            raise ValueError(f"famo: w_lr must be > 0, got {w_lr}.")
        if not (math.isfinite(gamma) and gamma >= 0.0):
            raise ValueError(f"famo: gamma must be ≥ 0, got {gamma}.")
        self.w_lr = float(w_lr)
        self.gamma = float(gamma)
        self.min_losses = None if min_losses is None else [float(m) for m in min_losses]
        self._logits: torch.Tensor | None = None
        self._optimizer: torch.optim.Adam | None = None
        self.previous_log_gaps: np.ndarray | None = None

    def _create(self, num_tasks: int) -> None:
        import torch  # lazily: the combiners' module imports without torch (``hf-mtl combiners``)

        self._logits = torch.zeros(num_tasks, dtype=torch.float64, requires_grad=True)
        self._optimizer = torch.optim.Adam([self._logits], lr=self.w_lr, weight_decay=self.gamma)

    def _log_gaps(self, losses: np.ndarray) -> np.ndarray:
        minimum = np.zeros(losses.size) if self.min_losses is None else np.asarray(self.min_losses)
        if minimum.size != losses.size:
            raise ValueError(f"famo: {minimum.size} min_losses for {losses.size} tasks.")
        gaps = losses - minimum + EPSILON
        bad = np.flatnonzero(gaps <= 0.0)
        if bad.size:
            task = int(bad[0])
            raise ValueError(f"famo: task index {task} has loss {losses[task]} below its min_loss {minimum[task]}.")
        return np.log(gaps)

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        import torch  # lazily, as in base.py

        check_num_tasks(None if self._logits is None else self._logits.numel(), num_tasks, self.name)
        log_gaps = self._log_gaps(losses)
        if self._logits is None:
            self._create(num_tasks)
        elif self.previous_log_gaps is not None:
            decrease = torch.as_tensor(self.previous_log_gaps - log_gaps)
            z = torch.softmax(self._logits.detach(), dim=0)
            self._optimizer.zero_grad()
            self._logits.grad = z * decrease - z * (z @ decrease)  # (diag z - z zᵀ) δ
            self._optimizer.step()
        self.previous_log_gaps = log_gaps
        z = torch.softmax(self._logits.detach(), dim=0).numpy()
        scaled = z / np.exp(log_gaps)
        self.last_info = {"task_logits": self._logits.detach().tolist()}
        return scaled / scaled.sum()

    def state_dict(self) -> dict[str, Any]:
        if self._logits is None:
            return {"logits": None, "optimizer": None, "previous_log_gaps": None}
        return {
            "logits": self._logits.detach().clone(),
            "optimizer": self._optimizer.state_dict(),
            "previous_log_gaps": None if self.previous_log_gaps is None else self.previous_log_gaps.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch  # lazily, as in base.py

        if state["logits"] is None:
            self._logits = self._optimizer = self.previous_log_gaps = None
            return
        self._create(state["logits"].numel())
        with torch.no_grad():
            self._logits.copy_(state["logits"])
        self._optimizer.load_state_dict(state["optimizer"])
        previous = state["previous_log_gaps"]
        self.previous_log_gaps = None if previous is None else np.asarray(previous, dtype=np.float64)
