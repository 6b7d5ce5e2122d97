"""Skipped steps are visible: all-skipped logging intervals show no loss, and a run of them stops training."""

from __future__ import annotations

import math

import datasets
import pytest
import torch
from conftest import SENTENCES

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task
from hf_mtl.steps.trainer import SkippedStepsError


def token_data(tokenizer, ignored: bool) -> datasets.Dataset:
    encoded = tokenizer(SENTENCES[:8], padding="max_length", max_length=16, truncation=True)
    labels = [[-100] * 16 if ignored else [-100] + [i % 3] * 14 + [-100] for i in range(8)]
    return datasets.Dataset.from_dict({**encoded, "labels": labels})


def trainer_for(tmp_path, encoder_dir, tokenizer, **overrides) -> MultiTaskTrainer:
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(encoder_dir, [Task("tags", "token_classification", num_labels=3)])
    args = dict(output_dir=str(tmp_path / "out"), max_steps=3, logging_steps=1, report_to=[], use_cpu=True,
                per_device_train_batch_size=4, save_strategy="no", disable_tqdm=True, dataloader_num_workers=0)
    args.update(overrides)
    ignored = args.pop("ignored", True)
    return MultiTaskTrainer(model, MultiTaskTrainingArguments(**args),
                            train_dataset={"tags": token_data(tokenizer, ignored)}, processing_class=tokenizer)


def test_token_task_with_every_label_ignored_logs_skipped_steps_not_a_zero_loss(tmp_path, tiny_encoder_dir,
                                                                                tokenizer):
    trainer = trainer_for(tmp_path, tiny_encoder_dir, tokenizer, max_consecutive_skipped_steps=0)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3
    for entry in logged:
        assert entry["skipped_steps"] == 1
        assert math.isnan(entry["loss"])
    assert trainer.last_step.skipped and "tags" in trainer.last_step.reason


def test_trained_steps_log_no_skipped_count(tmp_path, tiny_encoder_dir, tokenizer):
    trainer = trainer_for(tmp_path, tiny_encoder_dir, tokenizer, ignored=False)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all("skipped_steps" not in e and math.isfinite(e["loss"]) for e in logged)


def test_consecutive_skipped_steps_stop_the_run_naming_the_last_good_checkpoint(tmp_path, tiny_encoder_dir,
                                                                                tokenizer):
    trainer = trainer_for(tmp_path, tiny_encoder_dir, tokenizer, ignored=False, max_steps=20, save_strategy="steps",
                          save_steps=2, max_consecutive_skipped_steps=3)
    end_step = trainer.step_strategy.end_step

    def diverge_after_step_4():
        record = end_step()
        return record.skip("simulated divergence") if record.step >= 4 else record

    trainer.step_strategy.end_step = diverge_after_step_4
    with pytest.raises(SkippedStepsError) as caught:
        trainer.train()
    message = str(caught.value)
    out = tmp_path / "out"
    assert "optimizer step 7" in message and "(5–7)" in message and "simulated divergence" in message
    assert f"{out / 'checkpoint-4'}" in message and "checkpoint-6" not in message
    assert trainer.state.global_step == 6  # stopped inside step 7: nothing after it ran or was saved
    assert not (out / "model.safetensors").exists()


def test_limit_counts_only_consecutive_skips_and_zero_disables(tmp_path, tiny_encoder_dir, tokenizer):
    trainer = trainer_for(tmp_path, tiny_encoder_dir, tokenizer, ignored=False, max_steps=8,
                          max_consecutive_skipped_steps=2)
    end_step = trainer.step_strategy.end_step
    trainer.step_strategy.end_step = lambda: (r.skip("every other step") if (r := end_step()).step % 2 else r)
    trainer.train()
    assert trainer.state.global_step == 8
    disabled = trainer_for(tmp_path / "b", tiny_encoder_dir, tokenizer, max_steps=12, max_consecutive_skipped_steps=0)
    disabled.train()
    assert disabled.state.global_step == 12


def test_negative_limit_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="max_consecutive_skipped_steps must be ≥ 0"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), max_consecutive_skipped_steps=-1)
