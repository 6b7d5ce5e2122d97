"""Every registered combiner trains through the trainer by name; stateful ones resume exactly."""

from __future__ import annotations

import pytest
import torch

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task
from hf_mtl.combiners import available_combiners


def args_for(tmp_path, **overrides):
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=6, max_steps=2, learning_rate=1e-3,
                    logging_steps=1, save_strategy="no", report_to=[], seed=0, use_cpu=True,
                    dataloader_num_workers=0, disable_tqdm=True, sampling_strategy="uniform")
    defaults.update(overrides)
    return MultiTaskTrainingArguments(**defaults)


def build(tmp_path, encoder_dir, tasks, data, tokenizer, **overrides):
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(encoder_dir, tasks)
    return model, MultiTaskTrainer(model, args_for(tmp_path, **overrides), train_dataset=data,
                                   processing_class=tokenizer)


@pytest.mark.parametrize("name", available_combiners())
def test_every_combiner_trains_by_name(name, tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    model, trainer = build(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, combiner=name)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    trainer.train()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters(), strict=True))
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert all(f"weight_{t.name}" in logged[-1] for t in three_tasks)


def test_primary_auxiliary_reads_roles_from_tasks(tmp_path, tiny_encoder_dir, tokenizer, three_task_data):
    tasks = [Task("sentiment", num_labels=2, role="auxiliary"), Task("length", num_labels=3),
             Task("score", "regression", role="auxiliary")]
    _, trainer = build(tmp_path, tiny_encoder_dir, tasks, three_task_data, tokenizer, combiner="primary_auxiliary")
    assert list(trainer.combiner.primary) == [1]
    trainer.train()
    gram, weights = trainer.last_step.gram, trainer.last_step.weights
    u_dot_g = gram @ weights  # <u, g_i> for every task
    assert float(u_dot_g[0]) >= -1e-8 * float(gram.diagonal().max())
    assert float(u_dot_g[2]) >= -1e-8 * float(gram.diagonal().max())
    assert float(weights[1]) == pytest.approx(1.0)


def test_mgda_update_conflicts_with_no_task(tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    _, trainer = build(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, combiner="mgda")
    trainer.train()
    gram, weights = trainer.last_step.gram, trainer.last_step.weights
    u_dot_g = gram @ weights
    u_norm2 = weights @ gram @ weights
    assert torch.all(u_dot_g >= u_norm2 * (1 - 1e-6) - 1e-12)
    assert float(weights.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["uncertainty", "pcgrad", "gradnorm"])
def test_stateful_combiner_resumes_exactly(name, tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                           three_task_data):
    common = dict(combiner=name, max_steps=4, save_strategy="steps", save_steps=2, learning_rate=1e-3)
    straight, straight_trainer = build(tmp_path / "straight", tiny_encoder_dir, three_tasks, three_task_data,
                                       tokenizer, **common)
    straight_trainer.train()
    first, first_trainer = build(tmp_path / "resumed", tiny_encoder_dir, three_tasks, three_task_data, tokenizer,
                                 **common)
    first_trainer.train()
    checkpoint = tmp_path / "resumed" / "out" / "checkpoint-2"
    assert (checkpoint / "combiner_state.pt").is_file()
    resumed, resumed_trainer = build(tmp_path / "resumed", tiny_encoder_dir, three_tasks, three_task_data, tokenizer,
                                     **common)
    resumed_trainer.train(resume_from_checkpoint=str(checkpoint))
    for (n, p), (_, q) in zip(straight.named_parameters(), resumed.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=n)
    state_a, state_b = straight_trainer.combiner.state_dict(), resumed_trainer.combiner.state_dict()
    assert state_a.keys() == state_b.keys()
    torch.testing.assert_close(straight_trainer.last_step.weights, resumed_trainer.last_step.weights)


def test_missing_combiner_state_is_an_error(tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    _, trainer = build(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, combiner="linear",
                       max_steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    _, stateful = build(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, combiner="uncertainty",
                        max_steps=3)
    with pytest.raises(ValueError, match=r"Cannot resume from .*checkpoint-2: no combiner_state.pt"):
        stateful.train(resume_from_checkpoint=str(checkpoint))


@pytest.mark.parametrize("combiner", ["linear", "mgda"])
def test_tuning_free_l2_keeps_the_update_from_growing_the_weights(combiner, tmp_path, tiny_encoder_dir, tokenizer,
                                                                  three_tasks, three_task_data):
    """After the correction, <g, θ> ≥ 0 on the final gradient, so a gradient step never grows ||θ||² (1st order)."""
    model, trainer = build(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, combiner=combiner,
                           tuning_free_l2=True, max_steps=1)
    observed = {}

    def capture(optimizer, *args, **kwargs):
        params = [p for p in model.parameters() if p.grad is not None]
        observed["inner"] = sum(float((p.grad.double() * p.detach().double()).sum()) for p in params)
        observed["scale"] = sum(float(p.grad.double().norm() * p.detach().double().norm()) for p in params)

    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            capture(None)

    trainer.add_callback(Probe())
    trainer.train()
    assert observed["inner"] >= -1e-6 * observed["scale"]
    logged = [e for e in trainer.state.log_history if "loss" in e][-1]
    assert "l2_coefficient" in logged and logged["l2_coefficient"] >= 0
