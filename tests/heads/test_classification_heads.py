"""Single-sentence and sentence-pair classification heads: forward, losses, predictions, metrics, data."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from hf_mtl import MultiTaskModel, Task
from hf_mtl.data.sources import TaskData
from hf_mtl.heads import PairClassificationHead, SequenceClassificationHead


@pytest.fixture
def model(tiny_encoder_dir):
    tasks = [Task("sentiment", label_names=["neg", "pos"]), Task("nli", "sentence_pair_classification", num_labels=3)]
    return MultiTaskModel.from_encoder(tiny_encoder_dir, tasks).eval()


def test_single_sentence_head(model, tokenizer):
    head = model.heads["sentiment"]
    assert isinstance(head, SequenceClassificationHead)
    batch = {**tokenizer(["a fine film", "dull", "fine"], padding=True, return_tensors="pt"),
             "labels": torch.tensor([1, 0, -100])}
    z = model.encode(batch, task="sentiment")
    logits = head(z, batch)
    assert logits.shape == (3, 2)
    assert torch.allclose(head.loss(logits, batch), F.cross_entropy(logits[:2], batch["labels"][:2]))
    losses, counts = head.example_losses(logits, batch)
    assert counts.tolist() == [1.0, 1.0, 0.0] and losses[2] == 0
    assert torch.allclose(losses.sum() / counts.sum(), head.loss(logits, batch))
    predictions = head.predict(z, logits, batch)
    assert torch.equal(predictions, logits.argmax(-1))
    flat_predictions, references = head.metric_arrays(predictions, batch["labels"])
    assert references.tolist() == [1, 0] and len(flat_predictions) == 2
    scores = head.compute_metrics(np.array([1, 0, 1]), np.array([1, 0, 0]))
    assert list(scores) == ["accuracy", "macro_f1"] and scores["accuracy"] == pytest.approx(2 / 3)


def test_out_of_range_label_names_the_task(model, tokenizer):
    head = model.heads["sentiment"]
    batch = {**tokenizer(["x"], return_tensors="pt"), "labels": torch.tensor([2])}
    with pytest.raises(ValueError, match=r"Task 'sentiment': label 2 is outside \[0, 2\)"):
        head.loss(head(model.encode(batch), batch), batch)


def test_pair_head_reads_and_encodes_both_texts(model, tokenizer):
    task = model.tasks["nli"]
    assert isinstance(model.heads["nli"], PairClassificationHead)
    assert PairClassificationHead.text_columns(task) == ("text", "text_pair")
    rows = {"text": ["a man sleeps"], "text_pair": ["a person rests"], "label": [0]}
    encoded = PairClassificationHead.tokenize(task, rows, tokenizer, 32)
    assert encoded["input_ids"][0] == tokenizer("a man sleeps", "a person rests")["input_ids"]
    assert encoded["labels"] == [0]
    assert PairClassificationHead.collate_labels(task, [0, 2], 5).tolist() == [0, 2]
    raw = datasets.Dataset.from_dict({"text": ["a"], "label": [0]})
    with pytest.raises(ValueError, match="missing column 'text_pair'"):
        TaskData(task, raw, raw)
