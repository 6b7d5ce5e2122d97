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
    from transformers import PreTrainedTokenizerBase

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

    def readable(
        self, hidden: torch.Tensor, logits: torch.Tensor, batch: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase
    ) -> list[dict[str, Any]]:
        """``{"entities": [...]}`` per example: one entry per word of the first text, tagged by its first
        sub-word token (the labelling used in training), with ``entity`` (the tag), ``score``, ``word``, ``start``
        and ``end`` as in Transformers' ``token-classification`` pipeline. Needs a fast tokenizer (word ids)."""
        if "word_ids" not in batch:
            raise ValueError(f"Task {self.task_name!r} tags words: it needs a fast tokenizer (word ids and offsets).")
        probabilities = logits.float().softmax(dim=-1)
        scores, ids = (t.tolist() for t in probabilities.max(dim=-1))
        out = []
        for row, text in enumerate(batch["text"]):
            spans: dict[int, list[int]] = {}  # word → [first token, start, end] in the first text
            for position, (word, sequence) in enumerate(zip(batch["word_ids"][row], batch["sequence_ids"][row],
                                                            strict=True)):
                if word is None or sequence != 0:
                    continue
                start, end = batch["offset_mapping"][row][position]
                if word in spans:
                    spans[word][2] = end
                else:
                    spans[word] = [position, start, end]
            out.append({"entities": [
                {"entity": self.label_name(ids[row][first]), "score": scores[row][first], "index": first,
                 "word": text[start:end], "start": start, "end": end}
                for first, start, end in spans.values()
            ]})
        return out
