"""Dynamic Weight Average, "End-to-End Multi-Task Learning with Attention" (Liu, Johns & Davison, CVPR 2019).

``w_k(t) = K · exp(r_k(t-1)/T) / Σ_i exp(r_i(t-1)/T)`` with ``r_k(t-1) = L_k(t-1)/L_k(t-2)``: tasks whose loss
went down more slowly get more weight; temperature ``T`` (default 2, the paper's) softens the weighting.
``w = 1`` until two loss values are known.

The paper's ``L_k(t)`` is the average loss over epoch ``t``. A combiner sees one call per step, so losses are
averaged over windows of ``period`` calls (default 1: per step; set it to the number of steps per epoch to
reproduce the paper): the weights change only when a window closes. Stateful: the last two window averages and
the running sum of the open window. Losses of the two previous windows must be positive.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hf_mtl.combiners.base import Combiner, check_num_tasks, require_positive_losses
from hf_mtl.combiners.registry import register_combiner


@register_combiner
class DWA(Combiner):
    """Weights from the ratio of the last two (window-averaged) losses, through a softmax with temperature."""

    name = "dwa"
    needs_gradients = False
    needs_losses = True
    stateful = True

    def __init__(self, temperature: float = 2.0, period: int = 1) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0.0):
            raise ValueError(f"dwa: temperature must be > 0, got {temperature}.")
        if int(period) < 1:
            raise ValueError(f"dwa: period must be ≥ 1 call, got {period}.")
        self.temperature = float(temperature)
        self.period = int(period)
        self.history: list[np.ndarray] = []  # the last two closed window averages, oldest first
        self.window_sum: np.ndarray | None = None
        self.window_count = 0

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        known = self.window_sum.size if self.window_sum is not None else (self.history[0].size if self.history else None)
        check_num_tasks(known, num_tasks, self.name)
        if len(self.history) < 2:
            weights = np.ones(num_tasks)
        else:
            previous, last = self.history
            require_positive_losses(previous, self.name, "the loss ratio L(t-1)/L(t-2) needs positive losses")
            logits = (last / previous) / self.temperature
            softmax = np.exp(logits - logits.max())
            weights = num_tasks * softmax / softmax.sum()
        self.window_sum = losses.copy() if self.window_sum is None else self.window_sum + losses
        self.window_count += 1
        if self.window_count == self.period:
            self.history = [*self.history, self.window_sum / self.period][-2:]
            self.window_sum, self.window_count = None, 0
        self.last_info = {"windows_seen": len(self.history)}
        return weights

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [h.tolist() for h in self.history],
            "window_sum": None if self.window_sum is None else self.window_sum.tolist(),
            "window_count": self.window_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [np.asarray(h, dtype=np.float64) for h in state["history"]]
        window_sum = state["window_sum"]
        self.window_sum = None if window_sum is None else np.asarray(window_sum, dtype=np.float64)
        self.window_count = int(state["window_count"])
