"""The head registry: unknown kinds fail clearly; a kind registered in one place works end to end."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
import pytest
import torch

from hf_mtl import MultiTaskModel, Task
from hf_mtl.data import MultiTaskCollator, TaskMixture, tokenize_task_dataset
from hf_mtl.data.sources import TaskData
from hf_mtl.heads import (
    PairClassificationHead,
    RegressionHead,
    Seq2SeqHead,
    SequenceClassificationHead,
    TokenClassificationHead,
    head_class,
    register_head,
    registered_kinds,
)
from hf_mtl.masking import multitask_example_losses
from hf_mtl.tasks import TaskKind


@register_head("absolute_error_regression")
class AbsoluteErrorHead(RegressionHead):
    """A test-only kind: regression trained with the mean absolute error."""

    default_metrics = ("mse",)

    def loss(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        return (logits.view(-1) - batch["labels"].view(-1)).abs().mean()

    def example_losses(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        errors = (logits.view(-1) - batch["labels"].view(-1)).abs()
        return errors, torch.ones_like(errors)


def test_builtin_kinds_have_their_heads():
    assert head_class(TaskKind.SINGLE_SENTENCE_CLASSIFICATION) is SequenceClassificationHead
    assert head_class("sentence_pair_classification") is PairClassificationHead
    assert head_class(TaskKind.REGRESSION) is RegressionHead
    assert head_class("token_classification") is TokenClassificationHead
    assert head_class(TaskKind.SEQ2SEQ) is Seq2SeqHead
    assert {k.value for k in TaskKind} <= set(registered_kinds())


def test_unknown_kind_lists_registered_kinds():
    with pytest.raises(ValueError, match=r"No task head is registered for kind 'ranking'; registered kinds: \[.*seq2seq"):
        head_class("ranking")
    with pytest.raises(ValueError, match=r"Task 'a': unknown kind 'ranking'; expected one of \[.*regression"):
        Task("a", kind="ranking")


def test_registered_kind_works_end_to_end(tiny_encoder_dir, tokenizer, tmp_path):
    task = Task("distance", kind="absolute_error_regression")
    assert task.kind == "absolute_error_regression" and task.metrics == ["mse"] and task.num_labels == 1
    raw = datasets.Dataset.from_dict({"text": ["one", "two words", "three more words"], "label": [0.1, 0.2, 0.3]})
    data = TaskData(task, raw, raw)  # validated by the new head
    features = tokenize_task_dataset(task, data.train, tokenizer, max_length=16)
    batch = MultiTaskCollator(tokenizer, [task])(list(TaskMixture({"distance": features})))
    assert batch["task_batches"]["distance"]["labels"].dtype == torch.float32

    model = MultiTaskModel.from_encoder(tiny_encoder_dir, [task, Task("kind", num_labels=2)])
    assert isinstance(model.heads["distance"], AbsoluteErrorHead)
    out = model(**batch)
    logits = out.logits["distance"]
    expected = (logits.view(-1) - batch["task_batches"]["distance"]["labels"]).abs().mean()
    assert torch.allclose(out.task_losses["distance"], expected)
    example = multitask_example_losses(model, batch)
    assert torch.allclose(example.total(), out.loss)

    model.save_pretrained(tmp_path)
    reloaded = MultiTaskModel.from_pretrained(tmp_path)
    assert reloaded.config.task_list[0].kind == "absolute_error_regression"
    head = reloaded.heads["distance"]
    predictions = head.predict(None, logits, batch["task_batches"]["distance"])
    scores = head.compute_metrics(*head.metric_arrays(predictions, batch["task_batches"]["distance"]["labels"]))
    assert set(scores) == {"mse"}
