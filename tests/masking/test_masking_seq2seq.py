"""Loss masking for seq2seq (an example = a sentence pair, its loss = summed token loss) with LossMaskingTrainer."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer, TrainingArguments

from hf_mtl.masking import LossMaskingTrainer, LossMaskingTrainingArguments, seq2seq_example_losses

from .helpers import (
    SOURCES,
    TARGETS,
    flat_gradient,
    flat_params,
    per_example_gradients,
    seq2seq_collator,
    seq2seq_dataset,
    tiny_seq2seq,
)

COMMON = dict(per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3, report_to=[], use_cpu=True,
              disable_tqdm=True, save_strategy="no", dataloader_num_workers=0, logging_steps=1, seed=0,
              train_sampling_strategy="sequential")


@pytest.fixture
def pairs(tokenizer):
    """8 verse pairs, the last four with their targets rotated (misaligned)."""
    targets = TARGETS[:4] + TARGETS[5:8] + TARGETS[4:5]
    return seq2seq_dataset(tokenizer, SOURCES, targets)


@pytest.fixture
def clean(tokenizer):
    return seq2seq_dataset(tokenizer, SOURCES[:4], TARGETS[:4])


def make_trainer(tmp_path, tokenizer, train, clean, **overrides):
    model = tiny_seq2seq(tokenizer)
    model.accepts_loss_kwargs = False  # EncoderDecoderModel's loss is a token mean that ignores num_items_in_batch
    args = LossMaskingTrainingArguments(output_dir=str(tmp_path / "out"), **{**COMMON, **overrides})
    trainer = LossMaskingTrainer(model=model, args=args, train_dataset=train, clean_dataset=clean,
                                 data_collator=seq2seq_collator(tokenizer))
    return model, trainer


def test_one_masked_step_equals_brute_force(tmp_path, tokenizer, pairs, clean):
    model, trainer = make_trainer(tmp_path, tokenizer, pairs, clean, optim="sgd", learning_rate=0.5,
                                  max_grad_norm=0.0, lr_scheduler_type="constant", max_steps=1,
                                  loss_masking="example")
    noisy_batch = next(iter(trainer.get_train_dataloader()))
    stream = trainer.loss_masker.clean_batches
    clean_batch = stream.next_batch()
    stream.load_state_dict({"epoch": 0, "drawn": 0})
    params = [p for p in model.parameters() if p.requires_grad]
    before = flat_params(params)
    g_clean = flat_gradient(torch.autograd.grad(seq2seq_example_losses(model, clean_batch).total(), params,
                                                allow_unused=True), params)
    result = seq2seq_example_losses(model, noisy_batch)
    jacobian = per_example_gradients(result.losses, params)
    keep = (jacobian @ g_clean) >= 0
    expected = (keep.double() * result.weights.double()) @ jacobian
    trainer.train()
    torch.testing.assert_close(flat_params(params), before - 0.5 * expected, rtol=1e-4, atol=1e-6)
    logged = [e["masked_fraction"] for e in trainer.state.log_history if "masked_fraction" in e]
    assert logged == pytest.approx([1 - float(keep.double().mean())])


def test_keeping_every_pair_is_plain_trainer(tmp_path, tokenizer, pairs, clean):
    masked_model, masked = make_trainer(tmp_path, tokenizer, pairs, clean, loss_masking="example",
                                        masking_keep_fraction=1.0)
    masked.train()
    plain_model = tiny_seq2seq(tokenizer)
    plain_model.accepts_loss_kwargs = False
    plain = Trainer(model=plain_model, args=TrainingArguments(output_dir=str(tmp_path / "plain"), **COMMON),
                    train_dataset=pairs, data_collator=seq2seq_collator(tokenizer))
    with pytest.warns(FutureWarning):
        plain.train()
    for (name, p), q in zip(masked_model.named_parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_batch_mode_and_keep_fraction_train_and_log(tmp_path, tokenizer, pairs, clean):
    _, batch_mode = make_trainer(tmp_path / "batch", tokenizer, pairs, clean, loss_masking="batch", max_steps=1)
    batch_mode.train()
    logged = [e for e in batch_mode.state.log_history if "masking_lambda" in e]
    assert len(logged) == 1 and all(e["masking_lambda"] >= 0 and -1 <= e["masking_clean_cosine"] <= 1 for e in logged)
    _, fraction = make_trainer(tmp_path / "fraction", tokenizer, pairs, clean, loss_masking="example",
                               masking_keep_fraction=0.5, max_steps=1)
    fraction.train()
    assert [e["masked_fraction"] for e in fraction.state.log_history if "masked_fraction" in e] == [0.5]


def test_clean_set_of_another_task_and_plain_arguments_are_rejected(tmp_path, tokenizer, pairs, clean):
    with pytest.raises(ValueError, match=r"clean_dataset lacks column\(s\) \['labels'\]"):
        make_trainer(tmp_path, tokenizer, pairs, clean.remove_columns("labels"), loss_masking="example")
    with pytest.raises(ValueError, match="clean_dataset has no examples"):
        make_trainer(tmp_path, tokenizer, pairs, clean.select([]), loss_masking="batch")
    with pytest.raises(ValueError, match="has no loss-masking fields"):
        LossMaskingTrainer(model=tiny_seq2seq(tokenizer), args=TrainingArguments(output_dir=str(tmp_path), **COMMON),
                           train_dataset=pairs, clean_dataset=clean, data_collator=seq2seq_collator(tokenizer))
