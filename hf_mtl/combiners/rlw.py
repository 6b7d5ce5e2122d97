"""Random Loss Weighting, "Reasonable Effectiveness of Random Weighting" (Lin et al., TMLR 2022).

At every step draw ``λ̃ ~ N(0, I)`` and use ``w = softmax(λ̃)`` (the paper's default distribution; the weights
sum to 1). Loss-based: the trainer backpropagates ``Σ w_k L_k``. Seeded NumPy generator (option ``seed``) whose
state is in :meth:`state_dict`, so a resumed run draws the same weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hf_mtl.combiners.base import Combiner
from hf_mtl.combiners.registry import register_combiner


@register_combiner
class RLW(Combiner):
    """Random softmax-normal loss weights, redrawn every step."""

    name = "rlw"
    needs_gradients = False
    stateful = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)
        self._generator = np.random.default_rng(self.seed)

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        logits = self._generator.standard_normal(num_tasks)
        weights = np.exp(logits - logits.max())
        return weights / weights.sum()

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._generator.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._generator.bit_generator.state = state["generator"]
