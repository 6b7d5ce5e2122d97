"""``StepTrainer``: a ``transformers.Trainer`` whose ``training_step`` delegates to a step strategy.

``training_step`` is: prepare the micro-batch → ``strategy.micro_batch`` → on the step's last micro-batch
``strategy.end_step`` → :meth:`StepTrainer.on_step_end` with the :class:`~hf_mtl.steps.StepRecord`. The Trainer
then clips, steps the optimizer and the scheduler as usual. A strategy's own state (e.g. the loss-masking
clean stream) is saved in and restored from Trainer checkpoints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from hf_mtl.steps.base import StepStrategy, zero_gradients
from hf_mtl.steps.context import StepContext
from hf_mtl.steps.record import StepRecord


class StepTrainer(Trainer):
    """Base of :class:`~hf_mtl.MultiTaskTrainer` and :class:`~hf_mtl.masking.LossMaskingTrainer`.

    Subclasses set ``self.step_strategy`` (a :class:`~hf_mtl.steps.StepStrategy`) in their ``__init__``;
    without one the Trainer's own step runs.
    """

    step_strategy: StepStrategy | None = None
    last_step: StepRecord | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.args.dataloader_pin_memory and self.args.device.type == "cpu":
            # Pinned memory only speeds up copies to an accelerator; on CPU torch warns at every data loader.
            self.args.dataloader_pin_memory = False

    def step_context(self, task_names: list[str], task_weights: torch.Tensor | None = None) -> StepContext:
        """The :class:`StepContext` of this Trainer (its accelerator, step counter and accumulation)."""
        engine = "FSDP" if self.is_fsdp_enabled else "DeepSpeed" if self.is_deepspeed_enabled else None
        return StepContext(
            accelerator=self.accelerator,
            task_names=task_names,
            nonfinite_policy=getattr(self.args, "nonfinite_policy", "skip_step"),
            global_step=lambda: self.state.global_step,
            accumulation=lambda: self.current_gradient_accumulation_steps,
            task_weights=task_weights,
            record_task_gradients=bool(getattr(self.args, "record_task_gradients", False)),
            engine=engine,
        )

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        if self.step_strategy is None:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        loss = self.step_strategy.micro_batch(model, inputs)
        if self.accelerator.sync_gradients:
            record = self.step_strategy.end_step()
            if record.skipped:
                zero_gradients(self.accelerator.unwrap_model(model))
            self.on_step_end(model, record)
            self.last_step = record
        return loss.detach()

    def on_step_end(self, model: nn.Module, record: StepRecord) -> None:
        """Called once per optimizer step with its record, after the update is in ``.grad``."""

    def prepare_inputs(self, inputs: Any) -> Any:
        """Move a collated batch to the device (the Trainer's own preparation), for helpers such as the masking
        mode's clean stream."""
        return self._prepare_inputs(inputs)

    def drop_unused_columns(self, dataset: Any, description: str) -> Any:
        """The Trainer's removal of columns the model's ``forward`` does not take (``remove_unused_columns``)."""
        return self._remove_unused_columns(dataset, description=description)

    def add_masking_observer(self, observer: Callable[[Mapping[str, Any], Any], None]) -> None:
        """Call ``observer(batch, record)`` after each masked micro-batch (loss masking, example granularity)."""
        masker = getattr(self.step_strategy, "masker", None)
        if masker is None:
            raise ValueError("Loss masking is off (loss_masking='none'): there is nothing to observe.")
        masker.observers.append(observer)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self.step_strategy is not None:
            logs.update(self.step_strategy.log_metrics())
        super().log(logs, start_time)

    # --- checkpoints ------------------------------------------------------------------------------------
    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        name = None if self.step_strategy is None else self.step_strategy.state_file
        if name is not None and self.args.should_save:
            with open(os.path.join(output_dir, name), "w", encoding="utf-8") as handle:
                json.dump(self.step_strategy.state_dict(), handle)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        name = None if self.step_strategy is None else self.step_strategy.state_file
        if checkpoint is None or name is None:
            return
        path = os.path.join(checkpoint, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Checkpoint {checkpoint} has no {name}; it was not saved with the {self.step_strategy.name!r} step, "
                "so training cannot resume where it stopped."
            )
        with open(path, encoding="utf-8") as handle:
            self.step_strategy.load_state_dict(json.load(handle))
