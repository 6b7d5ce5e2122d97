"""A short training run on CPU prints no warning the project causes: no special-token alignment, no pin_memory."""

from __future__ import annotations

import logging
import warnings

import datasets
import pytest
import torch
from conftest import sentiment_rows
from transformers.utils import logging as hf_logging

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task
from hf_mtl.data import tokenize_task_dataset


@pytest.fixture
def propagated_transformers_logs():
    hf_logging.enable_propagation()
    try:
        yield
    finally:
        hf_logging.disable_propagation()


def train_once(tmp_path, model, tokenizer, caplog) -> tuple[MultiTaskTrainer, list[str]]:
    """One training step and an evaluation; every Python warning and transformers log message on the way."""
    task = model.config.task_list[0]
    data = {task.name: tokenize_task_dataset(task, datasets.Dataset.from_dict(sentiment_rows(8)), tokenizer, 32)}
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4,
                                      report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        trainer = MultiTaskTrainer(model, args, train_dataset=data, eval_dataset=data, processing_class=tokenizer)
        trainer.train()
        trainer.evaluate()
    return trainer, [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]


def test_training_on_cpu_warns_about_nothing_the_project_causes(tmp_path, tiny_encoder_dir, tokenizer, caplog,
                                                               propagated_transformers_logs):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, [Task("sentiment", label_names=["neg", "pos"])],
                                        tokenizer=tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    trainer, messages = train_once(tmp_path, model, tokenizer, caplog)
    assert not [m for m in messages if "pin_memory" in m or "PAD/BOS/EOS" in m], messages
    assert not trainer.args.dataloader_pin_memory or torch.cuda.is_available()


def test_without_the_tokenizer_transformers_would_align_and_warn(tmp_path, tiny_encoder_dir, tokenizer, caplog,
                                                                 propagated_transformers_logs):
    """The check above can fail: a model built without the tokenizer's ids gets the Trainer's warning."""
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, [Task("sentiment", label_names=["neg", "pos"])])
    _, messages = train_once(tmp_path, model, tokenizer, caplog)
    assert any("PAD/BOS/EOS" in m for m in messages)
