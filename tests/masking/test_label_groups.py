"""Label groups of a clean batch (masking_balance_labels): ids in per-example-loss order, clear errors."""

from __future__ import annotations

import pytest
import torch

from hf_mtl import MultiTaskModel, Task
from hf_mtl.masking.label_groups import label_groups

from .helpers import SENTIMENT

TOPIC = Task("topic", "single_sentence_classification", num_labels=3)
SCORE = Task("score", "regression")


def sub_batch(labels):
    ids = torch.tensor([[101, 2000 + i, 102] for i in range(len(labels))])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor(labels)}


def test_groups_follow_task_order_and_offset_later_tasks(tiny_encoder_dir):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, [SENTIMENT, TOPIC])
    batch = {"task_batches": {"topic": sub_batch([2, 0, -100]), "sentiment": sub_batch([1, 0])}}
    groups, count = label_groups(model, batch)
    assert count == 5 and groups.tolist() == [1, 0, 4, 2, -1]  # sentiment first (the model's order), topic + 2


def test_flat_classification_batch_uses_config_num_labels():
    model = torch.nn.Linear(2, 2)
    model.config = type("Config", (), {"num_labels": 3})()
    groups, count = label_groups(model, {"input_ids": torch.zeros(3, 2), "labels": torch.tensor([2, -100, 0])})
    assert count == 3 and groups.tolist() == [2, -1, 0]


def test_batches_without_one_class_label_per_example_are_rejected(tiny_encoder_dir):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, [SENTIMENT, SCORE])
    with pytest.raises(ValueError, match="task 'score' is regression"):
        label_groups(model, {"task_batches": {"score": sub_batch([0.5, 1.5])}})
    with pytest.raises(ValueError, match="shared-input batch"):
        label_groups(model, {"inputs": sub_batch([0, 1]), "labels": {"sentiment": torch.tensor([0, 1])}})
    with pytest.raises(ValueError, match="label 2 outside \\[0, 2\\)"):
        label_groups(model, {"task_batches": {"sentiment": sub_batch([0, 2])}})
    seq2seq = torch.nn.Linear(2, 2)
    seq2seq.config = type("Config", (), {"num_labels": 2})()
    with pytest.raises(ValueError, match=r"shape/type \(2, 3\)"):
        label_groups(seq2seq, {"input_ids": torch.zeros(2, 3), "labels": torch.ones(2, 3, dtype=torch.long)})
