"""Bad input and numeric faults not covered next to their feature: each gives a clear error or a
documented, logged handling — never NaN parameters."""

from __future__ import annotations

import dataclasses

import datasets
import pytest
import torch

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtl.combiners import Combiner
from hf_mtl.steps import ParamsStep, StepRecord, solve_weights


def args(tmp_path, **overrides):
    base = dict(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, disable_tqdm=True, max_steps=2,
                per_device_train_batch_size=6, save_strategy="no", sampling_strategy="uniform", learning_rate=1e-3)
    base.update(overrides)
    return MultiTaskTrainingArguments(**base)


def test_bad_training_argument_values_are_named(tmp_path):
    with pytest.raises(ValueError, match="gradient_mode must be one of .* got 'weights'"):
        args(tmp_path, gradient_mode="weights")
    with pytest.raises(ValueError, match="combiner_options is not valid JSON"):
        args(tmp_path, combiner_options="{tol: 1}")
    with pytest.raises(ValueError, match="sampling_strategy must be one of"):
        args(tmp_path, sampling_strategy="random")
    with pytest.raises(ValueError, match="nonfinite_policy must be one of"):
        args(tmp_path, nonfinite_policy="ignore")
    with pytest.raises(ValueError, match="task_gradient_dtype must be one of .* got 'float16'"):
        args(tmp_path, task_gradient_dtype="float16")


def test_unknown_combiner_option_is_named(tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    with pytest.raises(ValueError, match="Combiner 'mgda': bad options \\['tolerance'\\]"):
        MultiTaskTrainer(model, args(tmp_path, combiner="mgda", combiner_options='{"tolerance": 1e-6}'),
                         train_dataset=three_task_data, processing_class=tokenizer)


def test_shared_dataset_missing_a_label_column(tmp_path, tiny_encoder_dir, tokenizer, three_tasks):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    data = datasets.Dataset.from_dict({"input_ids": [[101, 102]], "label_sentiment": [1], "label_length": [0]})
    with pytest.raises(ValueError, match=r"lacks label column\(s\) \['label_score'\]"):
        MultiTaskTrainer(model, args(tmp_path), train_dataset=data, processing_class=tokenizer)


def test_soft_sharing_with_a_gradient_combiner_is_rejected(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                            three_task_data):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks, sharing="soft")
    with pytest.raises(ValueError, match="soft sharing"):
        MultiTaskTrainer(model, args(tmp_path, combiner="mgda"), train_dataset=three_task_data,
                         processing_class=tokenizer)


def test_soft_sharing_trains_with_a_loss_based_combiner(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                         three_task_data):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks, sharing="soft", soft_sharing_coef=1.0)
    trainer = MultiTaskTrainer(model, args(tmp_path, combiner="uncertainty"), train_dataset=three_task_data,
                               processing_class=tokenizer)
    trainer.train()
    assert model.soft_sharing_penalty().item() > 0  # the copies drifted apart, and the penalty sees it


@pytest.mark.parametrize("engine", ["FSDP", "DeepSpeed"])
def test_params_mode_refuses_fsdp1_and_deepspeed(engine, tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                             three_task_data):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    trainer = MultiTaskTrainer(model, args(tmp_path, combiner="mgda"), train_dataset=three_task_data,
                               processing_class=tokenizer)
    sharded = dataclasses.replace(trainer.step_strategy.context, engine=engine)
    with pytest.raises(ValueError, match=f"not supported under {engine}"):
        ParamsStep(sharded, model, trainer.combiner)


@pytest.mark.parametrize(("mode", "combiner", "message"), [
    ("encoder_output", "mgda", "gradient_mode='encoder_output' with gradient accumulation replays micro-batches"),
    ("params", "uncertainty", "Combiner 'uncertainty' reads the step's losses"),
])
@pytest.mark.parametrize("engine", ["FSDP", "DeepSpeed"])
def test_replaying_steps_refuse_accumulation_under_sharding_engines(mode, combiner, message, engine, tmp_path,
                                                                   tiny_encoder_dir, tokenizer, three_tasks,
                                                                   three_task_data):
    """``encoder_output`` mode and loss-reading combiners replay accumulated micro-batches on whole parameters,
    which FSDP and DeepSpeed do not keep: the first micro-batch says so, before anything is trained."""
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    trainer = MultiTaskTrainer(model, args(tmp_path, combiner=combiner, gradient_mode=mode),
                               train_dataset=three_task_data, processing_class=tokenizer)
    sharded = dataclasses.replace(trainer.step_strategy.context, engine=engine, accumulation=lambda: 2)
    strategy = type(trainer.step_strategy)(sharded, model, trainer.combiner)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=f"{message}.*{engine}"):
        strategy.micro_batch(model, next(iter(trainer.get_train_dataloader())))
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("combiner", ["mgda", "linear"])
def test_drop_task_policy_trains_the_other_tasks(combiner, tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                 three_task_data):
    data = dict(three_task_data)
    data["score"] = data["score"].map(lambda r: {"labels": float("inf")})
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    head_before = model.heads["score"].classifier.weight.detach().clone()
    trainer = MultiTaskTrainer(model, args(tmp_path, combiner=combiner, nonfinite_policy="drop_task"),
                               train_dataset=data, processing_class=tokenizer)
    trainer.train()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters(), strict=True))
    assert float(trainer.last_step.weights[2]) == 0.0
    if combiner == "linear":
        assert torch.equal(head_before, model.heads["score"].classifier.weight)


def test_zero_gradient_task_is_left_out_of_the_combination(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                           three_task_data):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    trainer = MultiTaskTrainer(model, args(tmp_path, combiner="mgda"), train_dataset=three_task_data,
                               processing_class=tokenizer)
    gram = torch.tensor([[4.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 2.0]], dtype=torch.float64)
    record = StepRecord(step=0)
    weights = solve_weights(trainer.combiner, trainer.step_strategy.context, record, torch.ones(3, dtype=torch.float64),
                            gram=gram)
    assert record.weights is weights and not record.skipped
    assert float(weights[1]) == 0.0 and float(weights.sum()) == pytest.approx(1.0)
    live = torch.tensor([0, 2])
    assert torch.all((gram @ weights)[live] >= weights @ gram @ weights - 1e-9)  # MGDA on the two live tasks


class Broken(Combiner):
    name = "broken"

    def __call__(self, gram=None, losses=None):
        return torch.full((gram.shape[0],), float("nan"), dtype=gram.dtype)


def test_non_finite_combiner_weights_raise_before_touching_parameters(tmp_path, tiny_encoder_dir, tokenizer,
                                                                      three_tasks, three_task_data):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = MultiTaskTrainer(model, args(tmp_path), train_dataset=three_task_data, processing_class=tokenizer,
                               combiner=Broken())
    with pytest.raises(FloatingPointError, match="combiner 'broken' returned non-finite weights"):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_primary_auxiliary_remaps_main_task_when_an_earlier_task_is_dropped(tmp_path, tiny_encoder_dir, tokenizer,
                                                                            three_task_data):
    """Sentiment's labels are all ignored (-100): its mean loss is NaN. It is dropped, and the main task
    (index 1 → position 0 of the sub-problem) still gets weight 1."""
    from hf_mtl import Task

    tasks = [Task("sentiment", num_labels=2, role="auxiliary"), Task("length", num_labels=3),
             Task("score", "regression", role="auxiliary")]
    data = dict(three_task_data)
    data["sentiment"] = data["sentiment"].map(lambda r: {"labels": -100})
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, tasks)
    trainer = MultiTaskTrainer(model, args(tmp_path, combiner="primary_auxiliary", nonfinite_policy="drop_task"),
                               train_dataset=data, processing_class=tokenizer)
    trainer.train()
    weights = trainer.last_step.weights
    assert float(weights[0]) == 0.0 and float(weights[1]) == pytest.approx(1.0)
    assert all(torch.isfinite(p).all() for p in model.parameters())
