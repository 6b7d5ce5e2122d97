"""Sentence classification heads: one text (single sentence) or a text pair (e.g. NLI, paraphrase).

The pooled encoder output (masked mean or ``[CLS]``) goes through dropout and a linear layer, trained with
cross-entropy, as in BERT's sentence-level fine-tuning (Devlin et al. 2019, arXiv 1810.04805).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import torch

from hf_mtl.heads.base import ClassifierHead, check_num_labels
from hf_mtl.heads.checks import check_class_labels
from hf_mtl.heads.registry import register_head

if TYPE_CHECKING:
    from hf_mtl.tasks import Task


@register_head("single_sentence_classification")
class SequenceClassificationHead(ClassifierHead):
    """One class per example: logits (B, num_labels) from the pooled representation."""

    default_metrics = ("accuracy", "macro_f1")
    has_classes = True
    label_dtype = "int64"

    @classmethod
    def check_task(cls, task: Task) -> None:
        check_num_labels(task)

    @classmethod
    def validate_labels(cls, task: Task, labels: pa.ChunkedArray, where: str, column: str) -> None:
        check_class_labels(where, column, labels, int(task.num_labels))

    def example_losses(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.class_losses(logits, batch["labels"])


@register_head("sentence_pair_classification")
class PairClassificationHead(SequenceClassificationHead):
    """One class per pair of texts (``text`` and ``text_pair``, encoded together)."""

    requires_pair = True
