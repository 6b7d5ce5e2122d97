"""Seq2seq data: validation, tokenisation of targets, collation in both layouts, the embedded Bible task."""

from __future__ import annotations

import datasets
import pytest
import torch

from hf_mtl import Task
from hf_mtl.data import (
    MultiTaskCollator,
    SharedInputCollator,
    TaskMixture,
    tokenize_shared_dataset,
    tokenize_task_dataset,
)
from hf_mtl.data.mixture import single_task_collator
from hf_mtl.data.sources import TaskData, load_task_data

TASK = Task("translate", "seq2seq")
RAW = datasets.Dataset.from_dict({
    "text": ["In the beginning God created the heaven and the earth.", "Jesus wept."],
    "label": ["At the first God made the heaven and the earth.", "Jesus was weeping."],
})


def test_targets_are_tokenised_without_start_token_and_end_with_eos(tokenizer):
    data = tokenize_task_dataset(TASK, TaskData(TASK, RAW, RAW).train, tokenizer, max_length=8)
    assert set(data.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    first = data[0]["labels"]
    assert first[-1] == tokenizer.sep_token_id and tokenizer.cls_token_id not in first and len(first) == 8
    body = tokenizer("Jesus was weeping.", add_special_tokens=False)["input_ids"]
    assert data[1]["labels"] == body + [tokenizer.sep_token_id]


def test_collators_pad_targets_with_ignore_index(tokenizer):
    data = tokenize_task_dataset(TASK, RAW, tokenizer, max_length=32)
    features = list(TaskMixture({"translate": data}))
    lengths = [len(f["labels"]) for f in features]
    for collator in (MultiTaskCollator(tokenizer, [TASK]), single_task_collator(tokenizer, TASK)):
        labels = collator(features)["task_batches"]["translate"]["labels"]
        assert labels.shape == (2, max(lengths)) and labels.dtype == torch.long
        assert labels[1, lengths[1]:].eq(-100).all() and not labels[0].eq(-100).any()
    by_name = MultiTaskCollator(tokenizer, ["translate"])(features)["task_batches"]["translate"]
    assert by_name["labels"].shape[1] >= max(lengths)  # known by name only: padded to at least the input width


def test_shared_input_layout_tokenises_and_collates_targets(tokenizer):
    tasks = [TASK, Task("short", num_labels=2)]
    raw = datasets.Dataset.from_dict({"text": RAW["text"], "label_translate": RAW["label"], "label_short": [0, 1]})
    data = tokenize_shared_dataset(tasks, raw, tokenizer, max_length=32)
    assert data[1]["label_translate"][-1] == tokenizer.sep_token_id
    batch = SharedInputCollator(tokenizer, tasks)(list(data))
    assert batch["labels"]["translate"].shape == (2, len(data[0]["label_translate"]))
    assert batch["labels"]["short"].tolist() == [0, 1]


def test_targets_must_be_text():
    bad = RAW.remove_columns("label").add_column("label", [1, 2])
    with pytest.raises(ValueError, match=r"Task 'translate', split 'train', column 'label': expected strings"):
        TaskData(TASK, bad, RAW)


def test_embedded_bible_translation():
    data = load_task_data("bible_translation", max_eval_samples=50)
    assert data.task.kind == "seq2seq" and data.task.metrics == ["sacrebleu", "chrf"]
    assert data.train.num_rows == 2000 and data.validation.num_rows == 50
    assert data.train.column_names == ["text", "label"]
    assert not set(data.train["text"]) & set(data.validation["text"])
