"""Uncertainty weighting, "Multi-Task Learning Using Uncertainty to Weigh Losses" (Kendall, Gal & Cipolla 2018).

Each task has a learnable log-variance ``s_k = log σ_k²`` and the total loss is

    Σ_k exp(-s_k) L_k + s_k,

the regression form (the paper's eq. 7, ``L/(2σ²) + log σ``) multiplied by 2, as in most implementations; the
classification form (eq. 10) differs only by ``½ s_k``. The returned weights are ``w_k = exp(-s_k)``: the trainer
backpropagates ``Σ w_k L_k`` (the ``+ s_k`` term has no gradient in the model).

A combiner is not in the trainer's optimizer, so ``s`` takes its own plain gradient step after each call, on the
closed-form derivative ``∂/∂s_k = 1 - exp(-s_k) L_k`` (option ``lr``): ``s ← s - lr·(1 - exp(-s)⊙L)``,
computed from the same losses as the returned weights (which use ``s`` before the step, as a joint optimizer
step would). The fixed point is ``s_k = log L_k``, i.e. ``w_k = 1/L_k``. The step is clipped to ``±max_step`` so
that a huge loss early in training cannot throw ``s`` far away. ``s`` starts at ``init`` (default 0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hf_mtl.combiners.base import Combiner, check_num_tasks
from hf_mtl.combiners.registry import register_combiner


@register_combiner
class Uncertainty(Combiner):
    """Homoscedastic-uncertainty loss weighting with log-variances updated by their own gradient step."""

    name = "uncertainty"
    needs_gradients = False
    needs_losses = True
    stateful = True

    def __init__(self, lr: float = 0.01, init: float = 0.0, max_step: float = 1.0) -> None:
        super().__init__()
        for option, value in (("lr", lr), ("max_step", max_step)):
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"uncertainty: {option} must be > 0, got {value}.")
        if not math.isfinite(init):
            raise ValueError(f"uncertainty: init must be finite, got {init}.")
        self.lr = float(lr)
        self.init = float(init)
        self.max_step = float(max_step)
        self.log_variances: np.ndarray | None = None

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        check_num_tasks(None if self.log_variances is None else self.log_variances.size, num_tasks, self.name)
        if self.log_variances is None:
            self.log_variances = np.full(num_tasks, self.init)
        weights = np.exp(-self.log_variances)
        gradient = 1.0 - weights * losses
        self.log_variances = self.log_variances - np.clip(self.lr * gradient, -self.max_step, self.max_step)
        self.last_info = {"log_variances": self.log_variances.tolist()}
        return weights

    def state_dict(self) -> dict[str, Any]:
        return {"log_variances": None if self.log_variances is None else self.log_variances.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        values = state["log_variances"]
        self.log_variances = None if values is None else np.asarray(values, dtype=np.float64)
