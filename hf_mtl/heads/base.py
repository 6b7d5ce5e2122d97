"""The task-head contract: one :class:`TaskHead` subclass per task kind owns everything kind-specific.

A head owns its module, loss, per-example loss (for loss masking), the validation of its label column, the
tokenisation of its dataset and the collation of its labels, its predictions and its metrics. The model,
the data pipeline, the trainer and the masking code call only the methods below, so a new task kind is
one new file with a class decorated by :func:`hf_mtl.heads.register_head`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from torch.nn import functional as F

from hf_mtl.metrics import compute_metric

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from hf_mtl.modeling import MultiTaskConfig
    from hf_mtl.tasks import Task

#: Label value ignored by every loss (padding, sub-word pieces, special tokens).
IGNORE_INDEX = -100


class TaskHead(nn.Module):
    """Base class of the task heads.

    Instance contract (the trainer and the step strategies rely on nothing else):

    * ``forward(hidden, batch) -> logits`` — ``hidden`` is the shared encoder output ``z``
      (batch × tokens × hidden), ``batch`` the task's sub-batch (``attention_mask``, ``labels``, ...);
    * ``loss(logits, batch) -> scalar`` — mean over the labelled items;
    * ``example_losses(logits, batch) -> (losses, counts)`` — per example: its loss (summed over its
      items) and its number of labelled items, so that ``Σ_b losses_b / Σ_b counts_b`` is ``loss``;
    * ``predict(hidden, logits, batch) -> Tensor`` — what evaluation compares with the labels;
    * ``readable(hidden, logits, batch, tokenizer) -> [dict]`` — one readable result per example (inference);
    * ``metric_arrays(predictions, labels) -> (predictions, references)`` — flat NumPy arrays, padding dropped;
    * ``compute_metrics(predictions, references, tokenizer) -> {name: value}`` — the task's metrics.

    Class-level (data) contract, used before any model exists: :meth:`check_task`, :meth:`validate_labels`,
    :meth:`text_columns`, :meth:`encode_labels`, :meth:`tokenize`, :meth:`collate_labels`.
    """

    #: The ``Task.kind`` value this head serves (set by :func:`~hf_mtl.heads.register_head`).
    kind: ClassVar[str]
    #: Metrics used when a task names none; the first is the headline metric.
    default_metrics: ClassVar[tuple[str, ...]] = ()
    #: Whether the task predicts one of ``num_labels`` classes (string labels map through ``label_names``).
    has_classes: ClassVar[bool] = False
    #: Whether the task needs a ``text_pair`` column (``requires``) or may read one (``accepts``).
    requires_pair: ClassVar[bool] = False
    accepts_pair: ClassVar[bool] = False
    #: Arrow/datasets dtype of the label column in contract form (``None``: keep as is).
    label_dtype: ClassVar[str | None] = None
    #: Whether ``load_task_data`` can read this kind from user files (one text + one label per row).
    readable_from_files: ClassVar[bool] = True
    #: Whether the head needs the tokenizer's special-token ids in ``MultiTaskConfig.decoder_token_ids``.
    needs_tokenizer: ClassVar[bool] = False

    def __init__(self, task: Task, config: MultiTaskConfig) -> None:
        super().__init__()
        self.task = task
        self.task_name = task.name
        self.num_labels = int(task.num_labels or 1)

    # --- task and data (class level) ----------------------------------------------------------------
    @classmethod
    def check_task(cls, task: Task) -> None:
        """Normalise and check the task's fields for this kind (``num_labels`` ...); raise ``ValueError``."""

    @classmethod
    def text_columns(cls, task: Task) -> tuple[str, ...]:
        """The text columns a task of this kind must have."""
        return ("text", "text_pair") if cls.requires_pair else ("text",)

    @classmethod
    def validate_labels(cls, task: Task, labels: pa.ChunkedArray, where: str, column: str) -> None:
        """Raise a ``ValueError`` naming ``where``, ``column``, the value and its row unless the labels fit."""
        raise NotImplementedError

    @classmethod
    def encode_labels(
        cls, task: Task, labels: list[Any], tokenizer: PreTrainedTokenizerBase, max_length: int
    ) -> list[Any]:
        """The ``labels`` feature of a batch of label values (identity; seq2seq tokenises its targets)."""
        return labels

    @classmethod
    def tokenize(
        cls,
        task: Task,
        rows: Mapping[str, list[Any]],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        label_column: str = "label",
    ) -> dict[str, Any]:
        """Encoder inputs of ``text`` (+ ``text_pair`` when present) and ``labels`` for a batch of rows."""
        pairs = rows.get("text_pair") if cls.requires_pair or cls.accepts_pair else None
        encoded = dict(tokenizer(rows["text"], pairs, truncation=True, max_length=max_length))
        encoded["labels"] = cls.encode_labels(task, rows[label_column], tokenizer, max_length)
        return encoded

    @classmethod
    def collate_labels(cls, task: Task | None, labels: Sequence[Any], width: int) -> torch.Tensor:
        """One sub-batch's label tensor; ``width`` is the padded input length (token-level labels)."""
        return torch.tensor(list(labels), dtype=torch.long)

    # --- model --------------------------------------------------------------------------------------
    def warm_start(self, encoder: PreTrainedModel) -> None:
        """Initialise from the pretrained shared encoder (``MultiTaskModel.from_encoder``); default: nothing."""

    def init_weights(self, initializer_range: float) -> None:
        """Fresh initialisation of the head's own layers (called by the model's ``post_init``)."""

    def loss(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Mean loss over the labelled items."""
        losses, counts = self.example_losses(logits, batch)
        return losses.sum() / counts.sum().clamp_min(1.0)

    def example_losses(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(losses, counts)``, both of shape (B,): summed loss and labelled items of each example."""
        raise NotImplementedError

    def predict(self, hidden: torch.Tensor, logits: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Class ids (per item)."""
        return logits.argmax(dim=-1)

    def readable(
        self, hidden: torch.Tensor, logits: torch.Tensor, batch: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase
    ) -> list[dict[str, Any]]:
        """One result per example for inference (:meth:`hf_mtl.modeling.MultiTaskModel.predict`): the class name
        (``Task.label_names``, else ``LABEL_<i>`` as in Transformers' ``id2label``) and its softmax probability."""
        probabilities = logits.float().softmax(dim=-1)
        scores, ids = probabilities.max(dim=-1)
        return [{"label": self.label_name(i), "score": s} for i, s in zip(ids.tolist(), scores.tolist(), strict=True)]

    def label_name(self, class_id: int) -> str:
        names = self.task.label_names
        return names[class_id] if names else f"LABEL_{class_id}"

    def metric_arrays(self, predictions: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Flat predictions and references with unlabelled items (``-100``) dropped."""
        predictions, labels = predictions.reshape(-1), labels.reshape(-1)
        keep = labels != IGNORE_INDEX
        return predictions[keep].cpu().numpy(), labels[keep].cpu().numpy()

    def compute_metrics(
        self, predictions: np.ndarray, references: np.ndarray, tokenizer: PreTrainedTokenizerBase | None = None
    ) -> dict[str, float]:
        """The task's metrics (:func:`hf_mtl.metrics.compute_metric`), headline first."""
        out: dict[str, float] = {}
        for name in self.task.metrics:
            out.update(compute_metric(name, predictions, references))
        return out


class ClassifierHead(TaskHead):
    """Dropout + one linear layer; the base of the classification, regression and token heads."""

    def __init__(self, task: Task, config: MultiTaskConfig) -> None:
        super().__init__(task, config)
        dropout = config.head_dropout
        if dropout is None:
            dropout = getattr(config.encoder_config, "hidden_dropout_prob", 0.1)
        self.pooling = config.pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.encoder_config.hidden_size, self.num_labels)

    def init_weights(self, initializer_range: float) -> None:
        nn.init.normal_(self.classifier.weight, std=initializer_range)
        nn.init.zeros_(self.classifier.bias)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """First token (``pooling="cls"``) or the masked mean over tokens (``"mean"``)."""
        if self.pooling == "cls":
            return hidden[:, 0]
        if attention_mask is None:
            return hidden.mean(dim=1)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    def forward(self, hidden: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(hidden, batch.get("attention_mask"))))

    def class_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy and labelled mask of each item (shape of ``labels``)."""
        return class_losses(logits, labels, self.num_labels, f"Task {self.task_name!r}")

    def loss(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Mean cross-entropy over the labelled items (label ``-100`` is ignored)."""
        labels = checked_class_ids(batch["labels"], self.num_labels, f"Task {self.task_name!r}")
        return F.cross_entropy(logits.float().reshape(-1, self.num_labels), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def checked_class_ids(labels: torch.Tensor, num_labels: int, where: str) -> torch.Tensor:
    """``labels`` as class ids; a label outside ``[0, num_labels)`` other than ``-100`` raises, naming ``where``."""
    labels = labels.long()
    out_of_range = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_labels))
    if bool(out_of_range.any()):
        bad = labels[out_of_range][0].item()
        raise ValueError(f"{where}: label {bad} is outside [0, {num_labels}) (num_labels={num_labels}).")
    return labels


def class_losses(
    logits: torch.Tensor, labels: torch.Tensor, num_labels: int, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of each item and its labelled mask (``-100`` ignored: loss 0, mask 0), shaped like ``labels``."""
    labels = checked_class_ids(labels, num_labels, where)
    losses = F.cross_entropy(
        logits.float().reshape(-1, num_labels), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(labels.shape)
    return losses, (labels != IGNORE_INDEX).float()


def check_num_labels(task: Task) -> None:
    """A class-predicting task needs ``num_labels >= 2`` (or ``label_names``)."""
    if task.num_labels is None or int(task.num_labels) < 2:
        raise ValueError(
            f"Task {task.name!r}: a {task.kind_name} task needs num_labels >= 2 (or label_names), "
            f"got {task.num_labels}."
        )
    task.num_labels = int(task.num_labels)
