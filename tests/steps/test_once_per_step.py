"""Every stateful combiner is called once per optimizer step, in every step strategy, and gradient
accumulation over two micro-batches trains exactly like one step on the two micro-batches together
(parameters and combiner state)."""

from __future__ import annotations

import datasets
import pytest
import torch
from tensor_checks import assert_same_parameters, assert_same_state

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtl.data.mixture import MultiTaskCollator, SharedInputCollator

LOSS_BASED = ["uncertainty", "dwa", "famo", "rlw"]
GRADIENT_BASED = ["gradnorm", "pcgrad"]
CASES = [(name, "params") for name in LOSS_BASED] + [
    (name, mode) for name in GRADIENT_BASED for mode in ("params", "encoder_output")]
STEPS = 3
LEARNING_RATE = 0.05


def disjoint_micro_batches(tokenizer, three_tasks, three_task_data):
    """Two disjoint-layout micro-batches with the same examples per task, and their concatenation."""
    names = [t.name for t in three_tasks]
    collate = MultiTaskCollator(tokenizer, names, frozenset({"score"}), pad_to_multiple_of=32)
    halves = []
    for half in range(2):
        features = []
        for name in names:
            for i in range(half * 3, half * 3 + 3):
                features.append({**three_task_data[name][i], "__task__": name})
        halves.append(collate(features))
    whole = {"task_batches": {
        name: {key: torch.cat([h["task_batches"][name][key] for h in halves]) for key in halves[0]["task_batches"][name]}
        for name in names}}
    return halves, whole


def shared_micro_batches(tokenizer, three_tasks):
    rows = [{"input_ids": tokenizer(f"example number {i} is here")["input_ids"],
             "label_sentiment": i % 2, "label_length": i % 3, "label_score": 0.1 * i} for i in range(8)]
    collate = SharedInputCollator(tokenizer, three_tasks, pad_to_multiple_of=16)
    return [collate(rows[:4]), collate(rows[4:])], collate(rows)


def train_manually(tmp_path, encoder_dir, tasks, data, tokenizer, combiner, mode, micro_batches):
    """``STEPS`` optimizer steps of plain SGD over ``micro_batches`` (one accumulation window per step)."""
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(encoder_dir, tasks)
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), combiner=combiner, gradient_mode=mode, report_to=[], use_cpu=True,
        gradient_accumulation_steps=len(micro_batches), combiner_options={"seed": 0} if combiner == "rlw" else None)
    trainer = MultiTaskTrainer(model, args, train_dataset=data, processing_class=tokenizer)
    calls = []
    compute = trainer.combiner.compute_weights

    def counting(*arguments):
        calls.append(trainer.state.global_step)
        return compute(*arguments)

    trainer.combiner.compute_weights = counting
    model.train()
    for _ in range(STEPS):
        trainer.current_gradient_accumulation_steps = len(micro_batches)
        for i, batch in enumerate(micro_batches):
            trainer.accelerator.gradient_state._set_sync_gradients(i == len(micro_batches) - 1)
            trainer.training_step(model, batch)
        assert not trainer.last_step.skipped, trainer.last_step.reason
        with torch.no_grad():
            for param in model.parameters():
                if param.grad is not None:
                    param -= LEARNING_RATE * param.grad
                    param.grad = None
        trainer.state.global_step += 1
    return model, trainer, calls


@pytest.mark.parametrize("layout", ["disjoint", "shared"])
@pytest.mark.parametrize(("combiner", "mode"), CASES)
def test_accumulation_is_one_step_on_the_whole_batch(combiner, mode, layout, tmp_path, tiny_encoder_dir, tokenizer,
                                                     three_tasks, three_task_data):
    if layout == "disjoint":
        halves, whole = disjoint_micro_batches(tokenizer, three_tasks, three_task_data)
        data = three_task_data
    else:
        halves, whole = shared_micro_batches(tokenizer, three_tasks)
        data = datasets.Dataset.from_dict({"input_ids": [[101, 102]], "label_sentiment": [0], "label_length": [0],
                                           "label_score": [0.0]})
    one, one_trainer, one_calls = train_manually(tmp_path / "one", tiny_encoder_dir, three_tasks, data, tokenizer,
                                                 combiner, mode, [whole])
    two, two_trainer, two_calls = train_manually(tmp_path / "two", tiny_encoder_dir, three_tasks, data, tokenizer,
                                                 combiner, mode, halves)
    assert one_calls == two_calls == list(range(STEPS))  # once per optimizer step
    assert_same_parameters(dict(two.named_parameters()), dict(one.named_parameters()), f"{combiner}/{mode}/{layout}")
    assert_same_state(two_trainer.combiner.state_dict(), one_trainer.combiner.state_dict())
    torch.testing.assert_close(two_trainer.last_step.losses, one_trainer.last_step.losses, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(two_trainer.last_step.weights, one_trainer.last_step.weights, rtol=1e-4, atol=1e-7)
