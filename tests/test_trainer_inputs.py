"""What the trainer accepts: a user's data collator (used, or refused with a reason), pre-padded data without a
tokenizer, and the opt-in per-task gradient rows of the step record."""

from __future__ import annotations

import pytest
import torch

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtl.data.mixture import MultiTaskCollator


def make_args(tmp_path, **overrides):
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=6, max_steps=2, learning_rate=1e-3,
                    report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", dataloader_num_workers=0,
                    sampling_strategy="uniform", seed=0)
    defaults.update(overrides)
    return MultiTaskTrainingArguments(**defaults)


def test_a_user_data_collator_is_used(tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    calls = []
    inner = MultiTaskCollator(tokenizer, three_tasks)

    def collator(features):
        calls.append(len(features))
        return inner(features)

    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    trainer = MultiTaskTrainer(model, make_args(tmp_path), train_dataset=three_task_data, data_collator=collator,
                               processing_class=tokenizer)
    trainer.train()
    assert calls[:2] == [6, 6]


def test_a_collator_with_the_wrong_layout_is_a_clear_error(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                           three_task_data):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    trainer = MultiTaskTrainer(model, make_args(tmp_path), train_dataset=three_task_data,
                               data_collator=lambda features: {"input_ids": torch.zeros(2, 3, dtype=torch.long)},
                               processing_class=tokenizer)
    with pytest.raises(ValueError, match=r"task_batches.*the data collator returned \['input_ids'\]"):
        trainer.train()


def test_pre_padded_data_trains_and_evaluates_without_a_tokenizer(tmp_path, tiny_encoder_dir, tokenizer,
                                                                  three_tasks, three_task_data):
    def pad(row):
        return tokenizer.pad({k: row[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                             padding="max_length", max_length=32)

    padded = {task.name: three_task_data[task.name].map(pad) for task in three_tasks}
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    trainer = MultiTaskTrainer(model, make_args(tmp_path), train_dataset=padded, eval_dataset=padded)
    trainer.train()
    assert "eval_sentiment_accuracy" in trainer.evaluate()
    ragged = MultiTaskTrainer(model, make_args(tmp_path / "ragged"), train_dataset=three_task_data)
    with pytest.raises(ValueError, match="different lengths .* no tokenizer to pad them"):
        ragged.train()


def test_record_task_gradients_keeps_the_rows_behind_the_gram(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                               three_task_data):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    trainer = MultiTaskTrainer(model, make_args(tmp_path, combiner="mgda", record_task_gradients=True, max_steps=1),
                               train_dataset=three_task_data, processing_class=tokenizer)
    trainer.train()
    record = trainer.last_step
    rows = record.task_gradients.double()
    assert rows.shape == (3, sum(p.numel() for p in model.shared_parameters()))
    torch.testing.assert_close(rows @ rows.T, record.gram, rtol=1e-5, atol=1e-9)
    default = MultiTaskTrainer(model, make_args(tmp_path / "default", combiner="mgda", max_steps=1),
                               train_dataset=three_task_data, processing_class=tokenizer)
    default.train()
    assert default.last_step.task_gradients is None
