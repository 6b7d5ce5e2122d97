"""MultiTaskTrainer: equivalence with a plain Trainer, evaluation keys, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments


def make_args(tmp_path, **overrides) -> MultiTaskTrainingArguments:
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=6, max_steps=4, learning_rate=1e-3,
                    logging_steps=1, save_strategy="no", report_to=[], seed=0, use_cpu=True,
                    dataloader_num_workers=0, disable_tqdm=True)
    defaults.update(overrides)
    return MultiTaskTrainingArguments(**defaults)


def make_model(tiny_encoder_dir, tasks, seed=0, **config):
    torch.manual_seed(seed)
    return MultiTaskModel.from_encoder(tiny_encoder_dir, tasks, **config)


class _Batches(Dataset):
    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.batches[i]


def test_linear_combiner_matches_plain_trainer_on_summed_loss(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                              three_task_data):
    mt_model = make_model(tiny_encoder_dir, three_tasks)
    plain_model = make_model(tiny_encoder_dir, three_tasks)
    args = make_args(tmp_path, combiner="linear")
    trainer = MultiTaskTrainer(mt_model, args, train_dataset=three_task_data, processing_class=tokenizer)
    batches = list(trainer.get_train_dataloader())[: args.max_steps]
    trainer.train()

    plain_args = TrainingArguments(output_dir=str(tmp_path / "plain"), per_device_train_batch_size=1,
                                   max_steps=args.max_steps, learning_rate=1e-3, save_strategy="no", report_to=[],
                                   seed=0, use_cpu=True, remove_unused_columns=False,
                                   train_sampling_strategy="sequential", disable_tqdm=True)
    plain = Trainer(plain_model, plain_args, train_dataset=_Batches(batches), data_collator=lambda f: f[0])
    plain.train()
    changed = False
    for (name, p), (_, q) in zip(mt_model.named_parameters(), plain_model.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"parameter {name} differs")
    initial = make_model(tiny_encoder_dir, three_tasks)
    for p, q in zip(mt_model.parameters(), initial.parameters(), strict=True):
        changed |= not torch.allclose(p, q)
    assert changed, "training did not move any parameter"


def test_per_task_losses_logged_and_eval_keys(tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    model = make_model(tiny_encoder_dir, three_tasks)
    args = make_args(tmp_path, max_steps=2)
    trainer = MultiTaskTrainer(model, args, train_dataset=three_task_data, eval_dataset=three_task_data,
                               processing_class=tokenizer)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(f"loss_{t.name}" in logged[0] for t in three_tasks)
    metrics = trainer.evaluate()
    for key in ("eval_sentiment_accuracy", "eval_sentiment_macro_f1", "eval_length_accuracy", "eval_score_pearson",
                "eval_score_spearmanr", "eval_sentiment_loss", "eval_loss", "eval_average"):
        assert key in metrics, key
    expected_avg = (metrics["eval_sentiment_accuracy"] + metrics["eval_length_accuracy"]
                    + metrics["eval_score_pearson"]) / 3
    assert metrics["eval_average"] == pytest.approx(expected_avg)
    trainer.save_metrics("eval", metrics)
    saved = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert saved["eval_average"] == pytest.approx(expected_avg)


def test_unknown_combiner_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="Unknown combiner 'nope'.*linear"):
        make_args(tmp_path, combiner="nope")


def test_batch_with_unknown_task_is_rejected(tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    model = make_model(tiny_encoder_dir, three_tasks[:2])
    with pytest.raises(ValueError, match=r"task\(s\) \['score'\] with no head"):
        MultiTaskTrainer(model, make_args_dummy(), train_dataset=three_task_data, processing_class=tokenizer)


def make_args_dummy():
    import tempfile

    return MultiTaskTrainingArguments(output_dir=tempfile.mkdtemp(), report_to=[], use_cpu=True)


def test_empty_task_is_rejected(tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    model = make_model(tiny_encoder_dir, three_tasks)
    data = dict(three_task_data)
    data["score"] = data["score"].select([])
    with pytest.raises(ValueError, match="task 'score' has no examples"):
        MultiTaskTrainer(model, make_args_dummy(), train_dataset=data, processing_class=tokenizer)
