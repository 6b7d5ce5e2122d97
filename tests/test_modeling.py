"""MultiTaskModel: forward on both layouts, save/load round trip, Auto classes, soft sharing, bad input."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel

from hf_mtl import MultiTaskConfig, MultiTaskModel, Task
from hf_mtl.data import MultiTaskCollator, SharedInputCollator


def _batch(tokenizer, texts, labels, dtype=torch.long):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return {**enc, "labels": torch.tensor(labels, dtype=dtype)}


@pytest.fixture
def tasks():
    return [Task("sentiment", label_names=["neg", "pos"]), Task("topic", num_labels=3), Task("score", "regression"),
            Task("tags", "token_classification", num_labels=4)]


def disjoint_batch(tokenizer):
    texts = ["a fine film", "a dull film"]
    enc = tokenizer(texts, padding=True)
    width = len(enc["input_ids"][0])
    return {
        "sentiment": _batch(tokenizer, texts, [1, 0]),
        "topic": _batch(tokenizer, ["sports news today", "markets fell"], [2, 1]),
        "score": _batch(tokenizer, ["three", "four"], [0.3, 0.4], torch.float32),
        "tags": {**tokenizer(texts, padding=True, return_tensors="pt"),
                 "labels": torch.tensor([[-100] + [1] * (width - 2) + [-100], [-100] + [3] * (width - 2) + [-100]])},
    }


def test_forward_disjoint_returns_every_task_loss(tiny_encoder_dir, tokenizer, tasks):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, tasks)
    out = model(task_batches=disjoint_batch(tokenizer))
    assert set(out.task_losses) == {t.name for t in tasks}
    assert out.logits["sentiment"].shape == (2, 2)
    assert out.logits["tags"].shape[:2] == disjoint_batch(tokenizer)["tags"]["input_ids"].shape
    assert torch.allclose(out.loss, sum(out.task_losses.values()))
    assert out.representations["topic"].shape[-1] == 32


def test_forward_shared_inputs_one_representation(tiny_encoder_dir, tokenizer, tasks):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, tasks[:3])
    enc = tokenizer(["good", "bad stuff"], padding=True, return_tensors="pt")
    out = model(inputs=dict(enc), labels={"sentiment": torch.tensor([1, 0]), "topic": torch.tensor([0, 2]),
                                          "score": torch.tensor([0.1, 0.9])})
    assert list(out.representations) == ["shared"]
    assert set(out.task_losses) == {"sentiment", "topic", "score"}


def test_save_load_round_trip_and_auto_model(tmp_path, tiny_encoder_dir, tokenizer, tasks):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, tasks, pooling="cls")
    with torch.no_grad():
        model.heads["topic"].classifier.bias.fill_(0.25)
    model.save_pretrained(tmp_path)
    loaded = MultiTaskModel.from_pretrained(tmp_path)
    auto = AutoModel.from_pretrained(tmp_path)
    assert isinstance(auto, MultiTaskModel)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MultiTaskConfig)
    assert [t.to_dict() for t in loaded.config.task_list] == [t.to_dict() for t in tasks]
    assert loaded.config.pooling == "cls"
    for other in (loaded, auto):
        for (name, p), (_, q) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
            torch.testing.assert_close(p, q, msg=name)
    model.eval()
    loaded.eval()
    batch = disjoint_batch(tokenizer)
    torch.testing.assert_close(model(task_batches=batch).loss, loaded(task_batches=batch).loss)


def test_from_encoder_copies_pretrained_weights(tiny_encoder_dir, tasks):
    from transformers import BertModel

    reference = BertModel.from_pretrained(tiny_encoder_dir)
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, tasks)
    for (name, p), (_, q) in zip(model.encoder.state_dict().items(), reference.state_dict().items(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_soft_sharing_penalty_and_separate_encoders(tiny_encoder_dir, tokenizer, tasks):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, tasks[:2], sharing="soft", soft_sharing_coef=0.5)
    assert model.shared_parameters() == []
    assert model.soft_sharing_penalty().item() == 0.0  # identical copies at start
    with torch.no_grad():
        next(model.encoders["topic"].parameters()).add_(0.1)
    first = next(model.encoders["topic"].parameters())
    expected = 0.5 * (0.1 ** 2) * first.numel()
    assert model.soft_sharing_penalty().item() == pytest.approx(expected, rel=1e-4)
    batch = {k: v for k, v in disjoint_batch(tokenizer).items() if k in ("sentiment", "topic")}
    out = model(task_batches=batch)
    assert torch.allclose(out.loss, out.task_losses["sentiment"] + out.task_losses["topic"] + out.soft_sharing_penalty)
    out.loss.backward()
    # the penalty pulls the two copies together: gradients on the perturbed parameter have opposite signs
    g_topic = next(model.encoders["topic"].parameters()).grad
    g_sent = next(model.encoders["sentiment"].parameters()).grad
    assert g_topic is not None and g_sent is not None


def test_label_outside_num_labels_names_task_and_value(tiny_encoder_dir, tokenizer, tasks):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, tasks[:2])
    batch = {"topic": _batch(tokenizer, ["x", "y"], [0, 7])}
    with pytest.raises(ValueError, match=r"Task 'topic': label 7 is outside \[0, 3\)"):
        model(task_batches=batch)


def test_bad_configs(tiny_encoder_dir):
    with pytest.raises(ValueError, match="sharing"):
        MultiTaskModel.from_encoder(tiny_encoder_dir, [Task("a", num_labels=2)], sharing="medium")
    with pytest.raises(ValueError, match="used twice"):
        MultiTaskConfig(tasks=[Task("a", num_labels=2), Task("a", num_labels=2)])
    with pytest.raises(ValueError, match="needs num_labels"):
        Task("a")
    with pytest.raises(ValueError, match="unknown kind"):
        Task("a", kind="ranking", num_labels=2)


def test_collators_build_both_layouts(tokenizer):
    feats = [{"__task__": "a", "input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "labels": 1},
             {"__task__": "b", "input_ids": [101, 102], "attention_mask": [1, 1], "labels": 0.5},
             {"__task__": "a", "input_ids": [101, 102], "attention_mask": [1, 1], "labels": 0}]
    out = MultiTaskCollator(tokenizer, ["a", "b"], frozenset({"b"}))(feats)
    assert out["task_batches"]["a"]["input_ids"].shape == (2, 3)
    assert out["task_batches"]["b"]["labels"].dtype == torch.float32
    tasks = [Task("a", num_labels=2), Task("b", "regression")]
    shared = SharedInputCollator(tokenizer, tasks)([
        {"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "label_a": 1, "label_b": 0.2},
        {"input_ids": [101, 102], "attention_mask": [1, 1], "label_a": 0, "label_b": 0.4}])
    assert shared["inputs"]["input_ids"].shape == (2, 3)
    assert shared["labels"]["a"].tolist() == [1, 0]
