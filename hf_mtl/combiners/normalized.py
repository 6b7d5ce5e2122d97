"""Gradient normalisation: ``w_k = 1/||g_k||``.

Sources: Su Jianlin 2022, "多任务学习漫谈（二）：行梯度之事" ("Multi-task learning notes II: gradients"), blog
post, https://kexue.fm/archives/8896, and its predecessor, Su Jianlin 2022, "多任务学习漫谈（一）：以损失之名"
("Multi-task learning notes I: in the name of the loss"), blog post on kexue.fm.

``u = Σ_k g_k/||g_k||`` is invariant to rescaling any single task's loss (and to a global rescaling). For two
tasks it is already non-conflicting: ``<u, g_i> = ||g_i||(1 + cos θ) ≥ 0``. A task with a zero gradient gets
weight 0 (it has nothing to contribute), never inf/NaN.
"""

from __future__ import annotations

import numpy as np

from hf_mtl.combiners.base import Combiner
from hf_mtl.combiners.registry import register_combiner


@register_combiner
class Normalized(Combiner):
    """Sum of unit-normalised task gradients."""

    name = "normalized"

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        norms = np.sqrt(np.diag(gram))
        self.last_info = {"zero_gradient_tasks": np.flatnonzero(norms == 0.0).tolist()}
        return np.divide(1.0, norms, out=np.zeros(num_tasks), where=norms > 0.0)
