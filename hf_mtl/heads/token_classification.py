"""Token classification head: one class per token (tagging, e.g. NER), as in BERT's token-level
fine-tuning (Devlin et al. 2019, arXiv 1810.04805); label ``-100`` marks sub-word pieces and special tokens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import torch

from hf_mtl.heads.base import IGNORE_INDEX, ClassifierHead, check_num_labels
from hf_mtl.heads.checks import check_token_labels
from hf_mtl.heads.registry import register_head

if TYPE_CHECKING:
    from hf_mtl.tasks import Task


@register_head("token_classification")
class TokenClassificationHead(ClassifierHead):
    """Logits (B, tokens, num_labels) from every token's representation; losses average over labelled tokens."""

    default_metrics = ("accuracy",)
    has_classes = True
    readable_from_files = False

    @classmethod
    def check_task(cls, task: Task) -> None:
        check_num_labels(task)

    @classmethod
    def validate_labels(cls, task: Task, labels: pa.ChunkedArray, where: str, column: str) -> None:
        check_token_labels(where, column, labels, int(task.num_labels))

    @classmethod
    def collate_labels(cls, task: Task | None, labels: Sequence[Any], width: int) -> torch.Tensor:
        """Label rows padded with ``-100`` to the padded input length ``width`` (or the longest row, if longer)."""
        width = max(width, *(len(row) for row in labels))
        return torch.tensor([list(row) + [IGNORE_INDEX] * (width - len(row)) for row in labels], dtype=torch.long)

    def forward(self, hidden: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.classifier(self.dropout(hidden))

    def example_losses(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each example's summed token cross-entropy and its number of labelled tokens."""
        losses, labelled = self.class_losses(logits, batch["labels"])
        return losses.sum(dim=1), labelled.sum(dim=1)
