"""``StepTrainer``: a ``transformers.Trainer`` whose ``training_step`` delegates to a step strategy.

``training_step`` is: prepare the micro-batch → ``strategy.micro_batch`` → on the step's last micro-batch
``strategy.end_step`` → :meth:`StepTrainer.on_step_end` with the :class:`~hf_mtl.steps.StepRecord`. The Trainer
then clips, steps the optimizer and the scheduler as usual. A strategy's own state (e.g. the loss-masking
clean stream) is saved in and restored from Trainer checkpoints. A run whose last
``max_consecutive_skipped_steps`` steps were all skipped (e.g. a diverged model) stops with
:class:`SkippedStepsError` instead of running on to ``max_steps`` and saving the model it never trained.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from hf_mtl.adapters import ADAPTER_SUBFOLDER
from hf_mtl.checkpoints import checkpoint_problems, last_complete_checkpoint, resume_argument, warn_if_inexact
from hf_mtl.run_safety import OutputDirLock, prepare_fresh_output_dir
from hf_mtl.steps.base import StepStrategy, zero_gradients
from hf_mtl.steps.context import StepContext
from hf_mtl.steps.record import StepRecord


def end_distributed_run() -> None:
    """Destroy the default process group, after collecting finished Trainers (a no-op in a single process).

    A DDP wrapper keeps the group, and so gloo's worker threads, alive after ``destroy_process_group``; left to
    interpreter exit, their teardown can abort a rank that finished and saved everything (SIGABRT, "terminate
    called without an active exception"). Under FSDP2 the sharded model itself holds the group.
    """
    gc.collect()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class SkippedStepsError(RuntimeError):
    """Too many consecutive optimizer steps were skipped (no parameter moved): training stopped."""


class StepTrainer(Trainer):
    """Base of :class:`~hf_mtl.MultiTaskTrainer` and :class:`~hf_mtl.masking.LossMaskingTrainer`.

    Subclasses set ``self.step_strategy`` (a :class:`~hf_mtl.steps.StepStrategy`) in their ``__init__``;
    without one the Trainer's own step runs.
    """

    step_strategy: StepStrategy | None = None
    last_step: StepRecord | None = None
    _streak: tuple[StepRecord, ...] = ()  # the first and the last step of the current run of skipped steps
    _streak_length: int = 0
    _streak_reasons: tuple[str, ...] = ()
    _window_steps: int = 0
    _window_skipped: int = 0

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
            shard_task_gradients=getattr(self.args, "shard_task_gradients", None),
            task_gradient_dtype=getattr(self.args, "task_gradient_dtype", "float32"),
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
            self._count_skipped(record)
        return loss.detach()

    # --- the run ---------------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
        """``Trainer.train`` holding a lock on ``output_dir``, resuming only from complete checkpoints.

        ``resume_from_checkpoint=True`` (or ``"True"`` from a command line) picks the newest complete
        ``checkpoint-N`` (one left half-written or corrupt is skipped with a warning); an explicit incomplete
        path is an error naming what is missing or broken. A run that does not resume refuses an ``output_dir``
        holding a previous run unless ``overwrite_output_dir`` (:mod:`hf_mtl.run_safety`).
        """
        resume = resume_argument(resume_from_checkpoint)
        with OutputDirLock(self.args.output_dir, enabled=self.args.process_index == 0):
            needs = self.checkpoint_requirements()
            if resume is True:
                resume = last_complete_checkpoint(self.args.output_dir, **needs)
                if resume is None:
                    raise ValueError(f"No complete checkpoint found in output directory {self.args.output_dir}.")
            elif isinstance(resume, str):
                problems = checkpoint_problems(resume, **needs)
                if problems:
                    raise ValueError(f"Cannot resume from {resume}: {'; '.join(problems)}.")
            if resume is None:
                prepare_fresh_output_dir(self.args.output_dir, bool(getattr(self.args, "overwrite_output_dir", False)),
                                         delete=self.args.process_index == 0)
                self.accelerator.wait_for_everyone()
            else:
                warn_if_inexact(resume)
            self._streak, self._streak_length, self._streak_reasons = (), 0, ()
            self._window_steps = self._window_skipped = 0
            return super().train(resume_from_checkpoint=resume, **kwargs)

    def checkpoint_requirements(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume this run (keywords of :func:`~hf_mtl.checkpoints.checkpoint_problems`):
        the optimizer unless ``save_only_model``, the encoder's adapter files when the model has one."""
        needs: dict[str, Any] = {"needs_optimizer": not self.args.save_only_model}
        if self._adapter_model() is not None:
            needs["adapter_subfolder"] = ADAPTER_SUBFOLDER
        return needs

    def _adapter_model(self) -> nn.Module | None:
        """The unwrapped model when its shared encoder carries a ``peft`` adapter (:mod:`hf_mtl.adapters`)."""
        model = self.accelerator.unwrap_model(self.model)
        return model if getattr(model, "has_adapter", False) else None

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """An adapter model's checkpoint holds the heads and the adapter, not the frozen encoder: load both in
        place (the Trainer's own loader would read the heads only)."""
        target = self._adapter_model() if model is None or model is self.model else None
        if target is None:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        target.load_trained_weights(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        target = self._adapter_model()
        if target is None or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            super()._load_best_model()
            return
        target.load_trained_weights(self.state.best_model_checkpoint)

    def _count_skipped(self, record: StepRecord) -> None:
        """Count skipped steps for the logs; stop after ``max_consecutive_skipped_steps`` in a row."""
        self._window_steps += 1
        self._window_skipped += int(record.skipped)
        if not record.skipped:
            self._streak, self._streak_length, self._streak_reasons = (), 0, ()
            return
        self._streak = (self._streak[0] if self._streak else record, record)
        self._streak_length += 1
        reason = record.reason or "no reason given"
        if reason not in self._streak_reasons:
            self._streak_reasons += (reason,)
        limit = int(getattr(self.args, "max_consecutive_skipped_steps", 0) or 0)
        if limit and self._streak_length >= limit:
            raise SkippedStepsError(self._skip_streak_message())

    def _skip_streak_message(self) -> str:
        first, last = self._streak[0].step + 1, self._streak[-1].step + 1
        good = last_complete_checkpoint(self.args.output_dir, max_step=first - 1, quiet=True,
                                        **self.checkpoint_requirements())
        where = (f"The last checkpoint saved before the skipped steps began is {good}; resume from it with "
                 f"resume_from_checkpoint={good!r} (e.g. with a lower learning rate)."
                 if good else "No checkpoint was saved before the skipped steps began.")
        return (f"Stopped at optimizer step {last}: the last {self._streak_length} steps ({first}–{last}) were all "
                f"skipped, so no parameter has moved since step {first - 1} (max_consecutive_skipped_steps="
                f"{self.args.max_consecutive_skipped_steps}; 0 disables the limit). Reasons: "
                f"{'; '.join(self._streak_reasons)}. Nothing was saved at the end of this run. {where}")

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
            if self._window_skipped:
                logs["skipped_steps"] = self._window_skipped
                if self._window_skipped == self._window_steps:  # nothing trained: no loss to show
                    logs["loss"] = float("nan")
            self._window_steps = self._window_skipped = 0
        super().log(logs, start_time)

    def end_training(self) -> None:
        """End a distributed run: drop this Trainer's DDP wrapper, then :func:`end_distributed_run` (nothing to do
        in a single process). Call it last: the Trainer cannot run collectives afterwards."""
        self.model_wrapped = self.model
        self.accelerator.free_memory()
        end_distributed_run()

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
