"""A run killed in the middle of saving (or a corrupt checkpoint) resumes from the previous, complete one."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from tensor_checks import assert_close_by_norm
from transformers import TrainerControl, TrainerState

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtl.callbacks import HISTORY_FILE, MultiTaskDiagnosticsCallback, read_history
from hf_mtl.checkpoints import checkpoint_problems, last_complete_checkpoint


def build(tmp_path, encoder_dir, tasks, data, tokenizer, **overrides):
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(encoder_dir, tasks)
    args = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=6, max_steps=4, learning_rate=1e-3,
                report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="steps", save_steps=2,
                sampling_strategy="uniform", dataloader_num_workers=0, combiner="uncertainty")
    args.update(overrides)
    return model, MultiTaskTrainer(model, MultiTaskTrainingArguments(**args), train_dataset=data,
                                   processing_class=tokenizer)


class Killed(RuntimeError):
    pass


def test_killed_mid_save_resumes_from_previous_checkpoint(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                          three_task_data, monkeypatch):
    straight, straight_trainer = build(tmp_path / "straight", tiny_encoder_dir, three_tasks, three_task_data, tokenizer)
    straight_trainer.train()

    _, dying = build(tmp_path / "run", tiny_encoder_dir, three_tasks, three_task_data, tokenizer)
    original = MultiTaskTrainer._save_optimizer_and_scheduler

    def die_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise Killed("process killed while writing the optimizer")
        original(self, output_dir)

    monkeypatch.setattr(MultiTaskTrainer, "_save_optimizer_and_scheduler", die_at_step_4)
    with pytest.raises(Killed):
        dying.train()
    monkeypatch.setattr(MultiTaskTrainer, "_save_optimizer_and_scheduler", original)
    out = tmp_path / "run" / "out"
    assert "no optimizer.pt" in checkpoint_problems(str(out / "checkpoint-4"))
    assert last_complete_checkpoint(str(out), needs_combiner=True) == str(out / "checkpoint-2")

    resumed, trainer = build(tmp_path / "run", tiny_encoder_dir, three_tasks, three_task_data, tokenizer)
    trainer.train(resume_from_checkpoint=True)
    for (name, p), (_, q) in zip(straight.named_parameters(), resumed.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=name)


def test_explicit_incomplete_checkpoint_names_what_is_missing(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                              three_task_data):
    _, trainer = build(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, max_steps=2)
    trainer.train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    (checkpoint / "trainer_state.json").write_text('{"global_step": 2, "log_hist')
    _, again = build(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, max_steps=3)
    with pytest.raises(ValueError, match="trainer_state.json is truncated or corrupt"):
        again.train(resume_from_checkpoint=str(checkpoint))
    with pytest.raises(ValueError, match="No complete checkpoint"):
        again.train(resume_from_checkpoint=True)


def truncate(path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


def test_corrupt_newest_checkpoint_falls_back_on_auto_resume_and_is_named_when_explicit(
        tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data, caplog):
    _, trainer = build(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer)
    trainer.train()
    out = tmp_path / "out"
    truncate(out / "checkpoint-4" / "model.safetensors")
    _, again = build(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, max_steps=5)
    with pytest.raises(ValueError, match=r"checkpoint-4: model.safetensors is truncated or corrupt"):
        again.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    again.train(resume_from_checkpoint=True)
    assert "Skipping incomplete or corrupt checkpoint" in caplog.text and "model.safetensors" in caplog.text
    assert again.state.global_step == 5 and (out / "checkpoint-5").is_dir()


@pytest.mark.parametrize(("damage", "message"), [(0, "optimizer.pt is empty"),
                                                 (None, "optimizer.pt is truncated or corrupt")])
def test_empty_or_truncated_optimizer_state_is_named(damage, message, tmp_path, tiny_encoder_dir, tokenizer,
                                                     three_tasks, three_task_data):
    _, trainer = build(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, max_steps=2)
    trainer.train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    truncate(checkpoint / "optimizer.pt", damage)
    assert any(message in problem for problem in checkpoint_problems(str(checkpoint)))
    _, again = build(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, max_steps=3)
    with pytest.raises(ValueError, match=message):
        again.train(resume_from_checkpoint=str(checkpoint))


def test_resume_without_rng_state_warns_that_it_is_not_exact(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                             three_task_data, caplog):
    _, trainer = build(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, max_steps=2)
    trainer.train()
    (tmp_path / "out" / "checkpoint-2" / "rng_state.pth").unlink()
    _, again = build(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, max_steps=3)
    again.train(resume_from_checkpoint=True)
    assert "has no rng_state.pth" in caplog.text and "not exact" in caplog.text


def test_history_with_a_partly_written_last_line_resumes(tmp_path, caplog):
    history = tmp_path / HISTORY_FILE
    good = [{"kind": "train", "step": s, "loss": {"a": 1.0}} for s in (1, 2, 3)]
    history.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"kind": "train", "st')
    with pytest.raises(ValueError, match="line 4"):
        read_history(history)
    callback = MultiTaskDiagnosticsCallback()
    args = SimpleNamespace(output_dir=str(tmp_path))
    callback.on_train_begin(args, TrainerState(global_step=2), TrainerControl())
    assert "dropping a partly written record" in caplog.text
    assert [r["step"] for r in read_history(history)] == [1, 2]
    history.write_text('{"kind": "tr\n' + json.dumps(good[0]) + "\n")
    with pytest.raises(ValueError, match="line 1"):  # a broken line in the middle is still an error
        read_history(history, drop_partial_last_line=True)


def test_lora_checkpoint_holds_the_adapter_and_resumes_exactly(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                               three_task_data):
    """Checkpoints of a LoRA model hold the heads and the adapter (no frozen encoder copy); resuming loads both
    into a model built from another seed, and training ends where an uninterrupted run ends."""
    peft = pytest.importorskip("peft")
    from safetensors.torch import load_file

    def lora_build(path, seed, **overrides):
        torch.manual_seed(seed)
        model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks, peft_config=peft.LoraConfig(
            r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False))
        args = dict(output_dir=str(path / "out"), per_device_train_batch_size=6, max_steps=4, learning_rate=1e-2,
                    report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="steps", save_steps=2,
                    sampling_strategy="uniform", dataloader_num_workers=0, combiner="mgda", gradient_mode="params")
        args.update(overrides)
        return model, MultiTaskTrainer(model, MultiTaskTrainingArguments(**args), train_dataset=three_task_data,
                                       processing_class=tokenizer)

    straight, trainer = lora_build(tmp_path / "straight", 0, save_strategy="no")
    initial = {n: p.detach().clone() for n, p in straight.named_parameters()}
    trainer.train()
    frozen = [n for n, p in straight.named_parameters() if not p.requires_grad]
    assert frozen and all(torch.equal(initial[n], dict(straight.named_parameters())[n]) for n in frozen)
    assert any(not torch.equal(initial[n], p) for n, p in straight.named_parameters() if "lora_" in n)

    _, first = lora_build(tmp_path / "run", 0)
    first.train()
    checkpoint = tmp_path / "run" / "out" / "checkpoint-2"
    assert all(key.startswith("heads.") for key in load_file(checkpoint / "model.safetensors"))
    assert (checkpoint / "encoder" / "adapter_model.safetensors").is_file()

    resumed, again = lora_build(tmp_path / "run", 1)
    again.train(resume_from_checkpoint=str(checkpoint))
    assert again.state.global_step == 4
    for (name, p), (_, q) in zip(straight.named_parameters(), resumed.named_parameters(), strict=True):
        assert_close_by_norm(q, p, name, rtol=1e-5, atol=1e-7)

    truncate(checkpoint / "encoder" / "adapter_model.safetensors")
    assert any("encoder/adapter_model.safetensors is truncated" in problem
               for problem in checkpoint_problems(str(checkpoint), adapter_subfolder="encoder"))
    _, broken = lora_build(tmp_path / "run", 0, max_steps=5)
    with pytest.raises(ValueError, match="encoder/adapter_model.safetensors is truncated"):
        broken.train(resume_from_checkpoint=str(checkpoint))


def test_lora_best_model_at_end_loads_the_best_checkpoints_adapter(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                                  three_task_data):
    peft = pytest.importorskip("peft")
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks, peft_config=peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False))
    # greater_is_better on the loss: the best checkpoint is the earlier one, so loading it moves the weights back.
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=6, max_steps=4, learning_rate=1e-2,
        report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="steps", save_steps=2, eval_strategy="steps",
        eval_steps=2, load_best_model_at_end=True, metric_for_best_model="loss", greater_is_better=True,
        sampling_strategy="uniform", dataloader_num_workers=0, combiner="mgda")
    trainer = MultiTaskTrainer(model, args, train_dataset=three_task_data, eval_dataset=three_task_data,
                               processing_class=tokenizer)
    trainer.train()
    best = tmp_path / "out" / "checkpoint-2"
    assert trainer.state.best_model_checkpoint == str(best)
    saved = load_file(best / "encoder" / "adapter_model.safetensors")
    current = peft.get_peft_model_state_dict(model.encoder)
    last = load_file(tmp_path / "out" / "checkpoint-4" / "encoder" / "adapter_model.safetensors")
    assert saved.keys() == current.keys() and any(not torch.equal(saved[k], last[k]) for k in saved)
    for key in saved:
        assert_close_by_norm(current[key], saved[key], key, rtol=0, atol=0)
    heads = load_file(best / "model.safetensors")
    for key, value in heads.items():
        assert_close_by_norm(model.state_dict()[key], value, key, rtol=0, atol=0)
