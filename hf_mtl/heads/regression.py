"""Regression head: one real value per example (or pair, e.g. STS-B), trained with the squared error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch
from torch.nn import functional as F

from hf_mtl.heads.base import ClassifierHead
from hf_mtl.heads.checks import check_regression_labels
from hf_mtl.heads.registry import register_head

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hf_mtl.tasks import Task


def squared_errors(predictions: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error of each example and its labelled mask (a ``NaN`` label: error 0, mask 0)."""
    targets = labels.to(torch.float32).view(-1)
    present = ~torch.isnan(targets)
    error = predictions.float().view(-1) - torch.where(present, targets, torch.zeros_like(targets))
    return torch.where(present, error.square(), torch.zeros_like(error)), present.float()


@register_head("regression")
class RegressionHead(ClassifierHead):
    """A linear layer to one output on the pooled representation; a ``NaN`` label marks an unlabelled example."""

    default_metrics = ("pearson", "spearmanr")
    accepts_pair = True
    label_dtype = "float32"

    @classmethod
    def check_task(cls, task: Task) -> None:
        if task.num_labels not in (None, 1):
            raise ValueError(f"Task {task.name!r}: a regression task has num_labels=1, got {task.num_labels}.")
        task.num_labels = 1

    @classmethod
    def validate_labels(cls, task: Task, labels: pa.ChunkedArray, where: str, column: str) -> None:
        check_regression_labels(where, column, labels)

    @classmethod
    def collate_labels(cls, task: Task | None, labels: Sequence[Any], width: int) -> torch.Tensor:
        return torch.tensor(list(labels), dtype=torch.float32)

    def loss(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Mean squared error over the labelled examples."""
        labels = batch["labels"].to(logits.dtype).view(-1)
        keep = ~torch.isnan(labels)
        return F.mse_loss(logits.view(-1)[keep], labels[keep])

    def example_losses(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return squared_errors(logits, batch["labels"])

    def predict(self, hidden: torch.Tensor, logits: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """The predicted values (B,)."""
        return logits.detach().float().view(-1)

    def readable(
        self, hidden: torch.Tensor, logits: torch.Tensor, batch: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase
    ) -> list[dict[str, Any]]:
        """The predicted value of each example as ``{"score": value}`` (``text-classification``'s regression output
        without the meaningless label)."""
        return [{"score": value} for value in self.predict(hidden, logits, batch).tolist()]

    def metric_arrays(self, predictions: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        predictions, labels = predictions.float().reshape(-1), labels.float().reshape(-1)
        keep = ~torch.isnan(labels)
        return predictions[keep].cpu().numpy(), labels[keep].cpu().numpy()
