"""Class-label groups of a clean batch, for the label-balanced clean direction (``masking_balance_labels``).

For a classifier, ``∇ℓ_b = (p_b − e_{y_b})·∂logits_b/∂θ``: the gradients of a class's examples share the part
that moves the class prior, and ``g_clean`` carries that part times how much the model currently
under-predicts each class. When it dominates, ``<∇ℓ_b, g_clean>`` has one sign per class and the example rule
keeps one class, whatever the corruption (docs/masking.md, Results). Normalising each class's clean gradient
before summing, ``Σ_c g_c/‖g_c‖``, gives every class the same say and cancels most of that part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hf_mtl.heads import IGNORE_INDEX, SequenceClassificationHead


def _checked(labels: Any, num_labels: int, where: str) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"masking_balance_labels needs one integer class label per example; {where} has labels "
                         f"of shape/type {shape} (sequence targets or regression values have no classes).")
    labels = labels.long()
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_labels))
    if bad.any():
        raise ValueError(f"masking_balance_labels: {where} has label {int(labels[bad][0])} outside "
                         f"[0, {num_labels}).")
    return labels


def label_groups(module: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
    """``(group of each example, number of groups)``, examples in the order per-example losses use.

    A group is one class of one task (``MultiTaskModel`` disjoint layout: classes of later tasks are offset by
    the earlier heads' ``num_labels``) or one class of a flat classification batch (``config.num_labels``).
    Unlabelled examples (-100) get group -1. Anything without one class label per example is an error.
    """
    if "task_batches" in batch:
        groups, offset = [], 0
        for name in module.task_names:
            num_labels = module.heads[name].num_labels
            sub_batch = batch["task_batches"].get(name)
            if sub_batch is not None:
                if not isinstance(module.heads[name], SequenceClassificationHead):
                    raise ValueError(f"masking_balance_labels needs sentence classification tasks; task {name!r} "
                                     f"is {module.tasks[name].kind_name}.")
                labels = _checked(sub_batch.get("labels"), num_labels, f"task {name!r}")
                groups.append(torch.where(labels == IGNORE_INDEX, labels.new_tensor(-1), labels + offset))
            offset += num_labels
        return torch.cat(groups), offset
    if "inputs" in batch:
        raise ValueError("masking_balance_labels needs one class label per example; a shared-input batch has one "
                         "label per task.")
    num_labels = int(getattr(getattr(module, "config", None), "num_labels", 0) or 0)
    labels = _checked(batch.get("labels"), num_labels, "the clean batch")
    return torch.where(labels == IGNORE_INDEX, labels.new_tensor(-1), labels), num_labels
