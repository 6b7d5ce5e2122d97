"""Loss masking in MultiTaskTrainer: exact steps against brute force, equivalences, logging, resume, bad input."""

from __future__ import annotations

import logging
import math

import datasets
import pytest
import torch

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task
from hf_mtl.masking import multitask_example_losses
from hf_mtl.steps.masking import MASKING_STATE_NAME

from .helpers import SENTIMENT, flat_gradient, flat_params, per_example_gradients, sentiment_dataset

SGD_ONE_STEP = dict(optim="sgd", learning_rate=0.5, max_grad_norm=0.0, weight_decay=0.0,
                    lr_scheduler_type="constant", max_steps=1)


def make_trainer(tmp_path, encoder_dir, tokenizer, noisy, clean, *, tasks=(SENTIMENT,), train_dataset=None,
                 **overrides):
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(encoder_dir, list(tasks))
    args = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=6, max_steps=2, learning_rate=1e-3,
                report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", dataloader_num_workers=0,
                logging_steps=1, seed=0, loss_masking="example")
    args.update(overrides)
    trainer = MultiTaskTrainer(model, MultiTaskTrainingArguments(**args),
                               train_dataset=train_dataset if train_dataset is not None else {"sentiment": noisy},
                               clean_dataset=clean, processing_class=tokenizer)
    return model, trainer


@pytest.fixture
def noisy(tokenizer):
    """12 reviews, the second half with flipped labels."""
    return datasets.concatenate_datasets([sentiment_dataset(tokenizer, 6), sentiment_dataset(tokenizer, 6, 6, True)])


@pytest.fixture
def clean(tokenizer):
    return {"sentiment": sentiment_dataset(tokenizer, 6, offset=3)}


def first_batches(trainer):
    """The noisy and clean batches the first step will see (the clean stream is rewound afterwards)."""
    noisy_batch = next(iter(trainer.get_train_dataloader()))
    stream = trainer.loss_masker.clean_batches
    clean_batch = stream.next_batch()
    stream.load_state_dict({"epoch": 0, "drawn": 0})
    return noisy_batch, clean_batch


def selection(model, pattern):
    return torch.cat([torch.full((p.numel(),), float(pattern is None or pattern in n), dtype=torch.float64)
                      for n, p in model.named_parameters() if p.requires_grad])


@pytest.mark.parametrize(("pattern", "train_on_clean"), [(None, False), (None, True), ("heads.", False)])
def test_example_masked_step_equals_brute_force(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean, pattern,
                                                train_on_clean):
    """θ' = θ - η (Σ_b m_b w_b ∇ℓ_b [+ g_clean]) with m_b = [<∇ℓ_b, g_clean> ≥ 0], from per-example backwards."""
    model, trainer = make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean, **SGD_ONE_STEP,
                                  masking_parameters=pattern.replace(".", r"\.") if pattern else None,
                                  masking_train_on_clean=train_on_clean)
    noisy_batch, clean_batch = first_batches(trainer)
    params = [p for p in model.parameters() if p.requires_grad]
    before = flat_params(params)
    clean_result = multitask_example_losses(model, clean_batch)
    g_clean = flat_gradient(torch.autograd.grad(clean_result.total(), params, allow_unused=True), params)
    result = multitask_example_losses(model, noisy_batch)
    jacobian = per_example_gradients(result.losses, params)
    keep = (jacobian @ (g_clean * selection(model, pattern))) >= 0
    assert 0 < int(keep.sum()) < keep.numel(), "the data should make some, not all, examples conflict"
    expected = (keep.double() * result.weights.double()) @ jacobian + (g_clean if train_on_clean else 0.0)

    trainer.train()
    torch.testing.assert_close(flat_params(params), before - 0.5 * expected, rtol=1e-4, atol=1e-6)
    assert trainer.loss_masker.last_step["masked_fraction"] == pytest.approx(1 - float(keep.double().mean()))


@pytest.mark.parametrize("train_on_clean", [False, True])
def test_label_balanced_direction_masked_step_equals_brute_force(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean,
                                                                 train_on_clean):
    """masking_balance_labels: m_b = [<∇ℓ_b, Σ_c g_c/‖g_c‖> ≥ 0], g_c the gradient of class c's clean examples."""
    model, trainer = make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean, **SGD_ONE_STEP,
                                  masking_balance_labels=True, masking_train_on_clean=train_on_clean)
    noisy_batch, clean_batch = first_batches(trainer)
    params = [p for p in model.parameters() if p.requires_grad]
    before = flat_params(params)
    clean_result = multitask_example_losses(model, clean_batch)
    labels = clean_batch["task_batches"]["sentiment"]["labels"]
    assert set(labels.tolist()) == {0, 1}
    direction = torch.zeros_like(before)
    for c in (0, 1):
        g_c = flat_gradient(torch.autograd.grad((clean_result.losses * clean_result.weights * (labels == c)).sum(),
                                                params, allow_unused=True, retain_graph=True), params)
        direction += g_c / g_c.norm()
    g_clean = flat_gradient(torch.autograd.grad(clean_result.total(), params, allow_unused=True), params)
    result = multitask_example_losses(model, noisy_batch)
    jacobian = per_example_gradients(result.losses, params)
    keep = (jacobian @ direction) >= 0
    assert bool((keep != ((jacobian @ g_clean) >= 0)).any()), "balancing should change some decision here"
    expected = (keep.double() * result.weights.double()) @ jacobian + (g_clean if train_on_clean else 0.0)

    trainer.train()
    torch.testing.assert_close(flat_params(params), before - 0.5 * expected, rtol=1e-4, atol=1e-6)
    assert trainer.loss_masker.last_step["masked_fraction"] == pytest.approx(1 - float(keep.double().mean()))


def test_label_balancing_is_rejected_in_batch_mode(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean):
    with pytest.raises(ValueError, match="masking_balance_labels applies to loss_masking='example'"):
        make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean, loss_masking="batch",
                     masking_balance_labels=True)


@pytest.mark.parametrize("train_on_clean", [False, True])
def test_batch_mode_equals_primary_auxiliary_closed_form(tmp_path, tiny_encoder_dir, tokenizer, train_on_clean):
    """u = g + λ g_clean with λ = relu(-<g, g_clean>)/||g_clean||² (g = g_noisy [+ g_clean])."""
    noisy = sentiment_dataset(tokenizer, 6, label=1)
    conflicting = {"sentiment": sentiment_dataset(tokenizer, 6, offset=6, label=0)}
    model, trainer = make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, conflicting, **SGD_ONE_STEP,
                                  loss_masking="batch", masking_train_on_clean=train_on_clean)
    noisy_batch, clean_batch = first_batches(trainer)
    params = [p for p in model.parameters() if p.requires_grad]
    before = flat_params(params)
    g_clean = flat_gradient(torch.autograd.grad(multitask_example_losses(model, clean_batch).total(), params,
                                                allow_unused=True), params)
    g_main = flat_gradient(torch.autograd.grad(multitask_example_losses(model, noisy_batch).total(), params,
                                               allow_unused=True), params)
    if train_on_clean:
        g_main = g_main + g_clean
    lam = max(0.0, -float(g_main @ g_clean)) / float(g_clean @ g_clean)
    assert lam > 0, "all-positive noisy and all-negative clean labels should conflict"

    trainer.train()
    torch.testing.assert_close(flat_params(params), before - 0.5 * (g_main + lam * g_clean), rtol=1e-4, atol=1e-6)
    assert trainer.loss_masker.last_step["lambda"] == pytest.approx(lam, rel=1e-4)
    logged = [e for e in trainer.state.log_history if "masking_lambda" in e]
    assert logged and logged[0]["masking_active_fraction"] == 1.0


@pytest.mark.parametrize("mode", ["example", "batch"])
def test_a_loss_scale_scales_the_update_but_not_the_masks(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean,
                                                          mode, monkeypatch):
    """With a GradScaler's scale s, .grad holds s·(the unscaled update) for the scaler to unscale."""
    results = {}
    for scale in (1.0, 1024.0):
        model, trainer = make_trainer(tmp_path / str(scale), tiny_encoder_dir, tokenizer, noisy, clean,
                                      loss_masking=mode)
        monkeypatch.setattr(trainer.step_strategy.context, "grad_scale", lambda s=scale: s)
        trainer.current_gradient_accumulation_steps = 1
        trainer.training_step(model, next(iter(trainer.get_train_dataloader())))
        grads = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
        results[scale] = (grads, dict(trainer.loss_masker.last_step))
    (grads_1, step_1), (grads_s, step_s) = results[1.0], results[1024.0]
    torch.testing.assert_close(grads_s, grads_1 * 1024.0, rtol=1e-4, atol=1e-6)
    key = "masked_fraction" if mode == "example" else "lambda"
    assert step_s[key] == pytest.approx(step_1[key], rel=1e-4)


def test_keeping_every_example_is_plain_training(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean):
    masked_model, masked = make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean, max_steps=3,
                                        masking_keep_fraction=1.0)
    masked.train()
    plain_model, plain = make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, None, max_steps=3,
                                      loss_masking="none")
    plain.train()
    for (name, p), q in zip(masked_model.named_parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert all(e["masked_fraction"] == 0.0 for e in masked.state.log_history if "masked_fraction" in e)


@pytest.mark.parametrize("mode", ["example", "batch"])
def test_accumulation_equals_the_larger_batch(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean, mode):
    data = datasets.concatenate_datasets([noisy, noisy])  # 24 rows: two steps of 12 stay in one epoch
    common = dict(loss_masking=mode, masking_clean_batch_size=6, max_steps=2)
    big_model, big = make_trainer(tmp_path / "big", tiny_encoder_dir, tokenizer, data, clean,
                                  per_device_train_batch_size=12, **common)
    big.train()
    small_model, small = make_trainer(tmp_path / "small", tiny_encoder_dir, tokenizer, data, clean,
                                      per_device_train_batch_size=6, gradient_accumulation_steps=2, **common)
    small.train()
    for (name, p), q in zip(big_model.named_parameters(), small_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    if mode == "example":
        fractions = [[e["masked_fraction"] for e in t.state.log_history if "masked_fraction" in e] for t in (big, small)]
        assert fractions[0] == pytest.approx(fractions[1])


def test_masked_fraction_is_logged_per_step_and_matches_the_masks(tmp_path, tiny_encoder_dir, tokenizer, noisy,
                                                                  clean):
    _, trainer = make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean, max_steps=3)
    seen: dict[int, list[torch.Tensor]] = {}
    trainer.add_masking_observer(lambda batch, record: seen.setdefault(record.step, []).append(record.keep))
    trainer.train()
    logged = [e["masked_fraction"] for e in trainer.state.log_history if "masked_fraction" in e]
    expected = [1 - float(torch.cat(seen[s]).double().mean()) for s in sorted(seen)]
    assert len(logged) == 3 and logged == pytest.approx(expected)
    assert any(0 < f < 1 for f in logged)


def test_zero_clean_gradient_skips_masking_without_nan(tmp_path, tiny_encoder_dir, tokenizer, noisy, caplog):
    unlabelled = {"sentiment": sentiment_dataset(tokenizer, 6, label=-100)}  # clean loss 0, gradient exactly 0
    with caplog.at_level(logging.WARNING, logger="hf_mtl.masking.masker"):
        model, trainer = make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, unlabelled)
        trainer.train()
    assert "clean gradient is zero" in caplog.text and "masking is skipped" in caplog.text
    logged = [e for e in trainer.state.log_history if "masked_fraction" in e]
    assert [e["masking_skipped_steps"] for e in logged] == [1.0, 1.0]
    assert [e["masked_fraction"] for e in logged] == [0.0, 0.0]
    plain_model, plain = make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, None, loss_masking="none")
    plain.train()
    for p, q in zip(model.parameters(), plain_model.parameters(), strict=True):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_resume_continues_the_clean_stream_exactly(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean):
    common = dict(max_steps=4, save_strategy="steps", save_steps=2, masking_clean_batch_size=2)
    full_model, full = make_trainer(tmp_path / "full", tiny_encoder_dir, tokenizer, noisy, clean, **common)
    full.train()
    checkpoint = tmp_path / "full" / "out" / "checkpoint-2"
    assert (checkpoint / MASKING_STATE_NAME).is_file()
    resumed_model, resumed = make_trainer(tmp_path / "resumed", tiny_encoder_dir, tokenizer, noisy, clean, **common)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for (name, p), q in zip(full_model.named_parameters(), resumed_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert resumed.loss_masker.clean_batches.state_dict() == full.loss_masker.clean_batches.state_dict()


@pytest.mark.slow
def test_resume_between_refreshes_recomputes_g_clean_from_the_same_batch(tmp_path, tiny_encoder_dir, tokenizer,
                                                                         noisy, clean):
    common = dict(max_steps=4, save_strategy="steps", save_steps=3, masking_refresh_steps=2,
                  masking_clean_batch_size=2)
    _, full = make_trainer(tmp_path / "full", tiny_encoder_dir, tokenizer, noisy, clean, **common)
    full.train()
    resumed_model, resumed = make_trainer(tmp_path / "resumed", tiny_encoder_dir, tokenizer, noisy, clean, **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "out" / "checkpoint-3"))
    # Refreshes at steps 0 and 2 drew two clean batches; the resumed run replays the second without drawing.
    assert resumed.loss_masker.clean_batches.state_dict() == full.loss_masker.clean_batches.state_dict() == {
        "epoch": 0, "drawn": 2}
    assert all(torch.isfinite(p).all() for p in resumed_model.parameters())


def test_bf16_autocast_masks_and_trains(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean):
    model, trainer = make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean, bf16=True)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    fractions = [e["masked_fraction"] for e in trainer.state.log_history if "masked_fraction" in e]
    assert len(fractions) == 2 and all(0.0 <= f < 1.0 for f in fractions)


# --- bad input ------------------------------------------------------------------------------------------------
def test_missing_or_empty_clean_set_is_rejected(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean):
    with pytest.raises(ValueError, match="needs a clean_dataset"):
        make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, None)
    with pytest.raises(ValueError, match="task 'sentiment' has no examples"):
        make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, {"sentiment": clean["sentiment"].select([])})
    with pytest.raises(ValueError, match="loss_masking='none'"):
        make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean, loss_masking="none")


def test_clean_set_for_another_task_or_layout_is_rejected(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean):
    other = Task("other", num_labels=2)
    with pytest.raises(ValueError, match=r"clean_dataset is for task\(s\) \['other'\] but train_dataset for "
                                         r"\['sentiment'\]"):
        make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, {"other": clean["sentiment"]},
                     tasks=(SENTIMENT, other))
    with pytest.raises(ValueError, match="same layout"):
        make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean["sentiment"])


def test_gradient_combiners_cannot_be_mixed_with_masking(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean):
    with pytest.raises(ValueError, match="combiner='linear'"):  # refused before anything trains
        make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean, combiner="mgda")


def test_parameter_pattern_matching_nothing_is_rejected(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean):
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean, masking_parameters="^nothing$")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"loss_masking": "tokens"}, "loss_masking must be one of"),
    ({"masking_keep_fraction": 0.0}, "keep fraction must lie in"),
    ({"masking_keep_fraction": 0.5, "masking_threshold": 0.1}, "either masking_threshold or masking_keep_fraction"),
    ({"masking_refresh_steps": 0}, "masking_refresh_steps must be ≥ 1"),
    ({"masking_train_on_clean": True, "masking_refresh_steps": 3}, "masking_refresh_steps must be 1"),
    ({"masking_threshold": math.inf}, "masking_threshold must be finite"),
    ({"masking_parameters": "("}, "not a regular expression"),
    ({"masking_clean_batch_size": 0}, "masking_clean_batch_size must be ≥ 1"),
])
def test_bad_masking_arguments_are_named(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, **overrides)


@pytest.mark.parametrize("mode", ["example", "batch"])
def test_a_diverging_run_follows_the_nonfinite_policy(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean, mode):
    """A learning rate that makes the loss overflow: `raise` stops with the step named, `skip_step` never writes
    a NaN into the weights (the old masking step bypassed the policy and ended with NaN weights)."""
    diverging = dict(optim="sgd", learning_rate=1e12, max_grad_norm=0.0, max_steps=6, loss_masking=mode)
    _, trainer = make_trainer(tmp_path / "raise", tiny_encoder_dir, tokenizer, noisy, clean, nonfinite_policy="raise",
                              **diverging)
    with pytest.raises(FloatingPointError, match="non-finite"):
        trainer.train()
    model, trainer = make_trainer(tmp_path / "skip", tiny_encoder_dir, tokenizer, noisy, clean, **diverging)
    trainer.train()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert trainer.last_step.skipped and "non-finite" in trainer.last_step.reason


def test_per_task_losses_are_logged_under_masking(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean):
    _, trainer = make_trainer(tmp_path, tiny_encoder_dir, tokenizer, noisy, clean)
    trainer.train()
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert logged and all(math.isfinite(e["loss_sentiment"]) for e in logged)
    assert trainer.last_step.losses is not None and trainer.last_step.losses.shape == (1,)
