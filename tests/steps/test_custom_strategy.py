"""A new way of producing the update is one class: the example of docs/architecture.md, registered here, trains."""

from __future__ import annotations

import pytest
import torch

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtl.steps import (
    StepStrategy,
    available_step_strategies,
    get_step_strategy,
    register_step_strategy,
    solve_weights,
)
from hf_mtl.steps.base import ordered_losses


@register_step_strategy
class LastMicroBatchOnly(StepStrategy):
    """Weights from the last micro-batch's losses, one backward there."""

    name = "last_micro_batch"

    def micro_batch(self, model, inputs):
        outputs = model(**inputs)
        losses = ordered_losses(outputs.task_losses, self.context)
        if self.context.is_last_micro_batch:
            self.record = self.new_record()
            weights = solve_weights(self.combiner, self.context, self.record, losses.detach())
            if weights is not None:
                self.context.backward((weights.to(losses) * losses).sum())
        return self.context.reported_loss(losses)

    def end_step(self):
        return self.record


def test_a_registered_strategy_replaces_the_step(tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    assert "last_micro_batch" in available_step_strategies()
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=6, max_steps=2,
                                      learning_rate=1e-3, report_to=[], use_cpu=True, disable_tqdm=True,
                                      save_strategy="no", logging_steps=1, combiner="uncertainty")
    trainer = MultiTaskTrainer(model, args, train_dataset=three_task_data, processing_class=tokenizer)
    trainer.step_strategy = get_step_strategy("last_micro_batch")(trainer.step_strategy.context, model,
                                                                  trainer.combiner)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters(), strict=True))
    assert trainer.last_step.weights is not None and trainer.combiner.log_variances is not None
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert all(f"weight_{t.name}" in logged[-1] for t in three_tasks)


def test_unknown_strategy_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown step strategy 'nope'; available: .*params"):
        get_step_strategy("nope")
