"""The output directory: one run at a time (a lock), no fresh run over a previous one, "True" means resume."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtl.run_safety import LOCK_FILE, OutputDirLock


def build(out, encoder_dir, tasks, data, tokenizer, **overrides) -> MultiTaskTrainer:
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(encoder_dir, tasks)
    args = dict(output_dir=str(out), per_device_train_batch_size=6, max_steps=2, learning_rate=1e-3, report_to=[],
                use_cpu=True, disable_tqdm=True, save_strategy="steps", save_steps=2, sampling_strategy="uniform",
                dataloader_num_workers=0)
    args.update(overrides)
    return MultiTaskTrainer(model, MultiTaskTrainingArguments(**args), train_dataset=data, processing_class=tokenizer)


def write_lock(out, pid: int, host: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": host, "started": "then"}))


def test_a_second_run_into_a_locked_output_dir_names_the_other_process(tmp_path, tiny_encoder_dir, tokenizer,
                                                                       three_tasks, three_task_data):
    out = tmp_path / "out"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(out, other.pid, socket.gethostname())
        trainer = build(out, tiny_encoder_dir, three_tasks, three_task_data, tokenizer)
        with pytest.raises(RuntimeError, match=f"in use by another run: process {other.pid} on host"):
            trainer.train()
        assert trainer.state.global_step == 0 and (out / LOCK_FILE).exists()
    finally:
        other.kill()
        other.wait()
    write_lock(out, 1234, "another-host")
    with pytest.raises(RuntimeError, match="process 1234 on host 'another-host'"):
        OutputDirLock(str(out)).acquire()


def test_the_lock_of_a_dead_process_is_taken_over_and_released_at_the_end(tmp_path, tiny_encoder_dir, tokenizer,
                                                                          three_tasks, three_task_data, caplog):
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(out, dead.pid, socket.gethostname())
    trainer = build(out, tiny_encoder_dir, three_tasks, three_task_data, tokenizer)
    trainer.train()
    assert trainer.state.global_step == 2
    assert "stale lock" in caplog.text
    assert not (out / LOCK_FILE).exists()


def test_a_fresh_run_over_a_previous_run_is_refused_unless_resumed_or_overwritten(tmp_path, tiny_encoder_dir,
                                                                                  tokenizer, three_tasks,
                                                                                  three_task_data):
    out = tmp_path / "out"
    build(out, tiny_encoder_dir, three_tasks, three_task_data, tokenizer).train()
    assert (out / "checkpoint-2").is_dir()
    again = build(out, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, max_steps=4)
    with pytest.raises(ValueError, match="holds a previous run") as caught:
        again.train()
    message = str(caught.value)
    assert str(out) in message and "checkpoint-2" in message
    assert "resume_from_checkpoint=True" in message and "overwrite_output_dir=True" in message
    assert (out / "checkpoint-2").is_dir()  # nothing lost
    again.train(resume_from_checkpoint="True")  # as HfArgumentParser gives it from the command line
    assert again.state.global_step == 4 and (out / "checkpoint-4").is_dir()

    overwritten = build(out, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, overwrite_output_dir=True)
    overwritten.train()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert overwritten.state.global_step == 2


def test_a_previous_history_alone_counts_as_a_previous_run(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                          three_task_data):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mtl_history.jsonl").write_text('{"kind": "train", "step": 1}\n')
    trainer = build(out, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, save_strategy="no")
    with pytest.raises(ValueError, match="mtl_history.jsonl"):
        trainer.train()


def test_max_steps_zero_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="max_steps must be a positive number"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), max_steps=0)
