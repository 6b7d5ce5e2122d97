"""``MultiTaskTrainer``: a ``transformers.Trainer`` whose step combines per-task gradients.

One optimizer step: batch → per-task losses → per-task gradients → K×K Gram → combiner → weights → one update
in ``.grad`` (:mod:`hf_mtl.steps`, one strategy per way of producing it); the Trainer then clips, steps the
optimizer and the scheduler as usual. Evaluation and prediction run the Trainer's own ``evaluation_loop`` once
per task (disjoint layout) or once for all tasks (shared inputs), through :meth:`prediction_step`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler
from transformers import EvalPrediction
from transformers.trainer_utils import EvalLoopOutput, PredictionOutput, speed_metrics

from hf_mtl.combiners import Combiner, get_combiner
from hf_mtl.data.mixture import (
    MultiTaskBatchSampler,
    MultiTaskCollator,
    SharedInputCollator,
    TaskMixture,
    single_task_collator,
)
from hf_mtl.gradients import gram_diagnostics
from hf_mtl.masking.per_example import PerExampleLoss
from hf_mtl.masking.trainer import build_loss_masker
from hf_mtl.model_card import build_model_card, hub_base_model
from hf_mtl.modeling import SHARED_GROUP, MultiTaskModel
from hf_mtl.regularization import apply_tuning_free_l2_
from hf_mtl.steps import StepRecord, get_step_strategy
from hf_mtl.steps.trainer import StepTrainer
from hf_mtl.tasks import Task
from hf_mtl.training_args import MultiTaskTrainingArguments

logger = logging.getLogger(__name__)

COMBINER_STATE_NAME = "combiner_state.pt"


class MultiTaskTrainer(StepTrainer):
    """Trainer for a :class:`~hf_mtl.MultiTaskModel`.

    Args:
        model: the multi-task model.
        args: :class:`~hf_mtl.MultiTaskTrainingArguments`.
        train_dataset: disjoint layout: ``{task: tokenised Dataset}``; shared-input layout: one tokenised
            ``Dataset`` with a ``label_<task>`` column per task.
        eval_dataset: same layouts as ``train_dataset``.
        combiner: a ready :class:`~hf_mtl.combiners.Combiner`; by default built from ``args.combiner``.
        clean_dataset: the trusted set of the ``loss_masking`` mode (:mod:`hf_mtl.masking`), laid out like
            ``train_dataset``.
        per_example_loss: the masking mode's per-example loss (default: the heads' own).
        compute_metrics: optional ``fn(EvalPrediction) -> dict``, called once per evaluation with per-task dicts
            (``predictions[task]``, ``label_ids[task]``); its keys are added (prefixed) to each task's own metrics.
        Other arguments are those of ``transformers.Trainer``. ``processing_class`` (the tokenizer) pads the
        sub-batches; without one, pre-tokenised data must already be padded to one length. A ``data_collator``
        replaces the built-in collators and must return the model's batch layout.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        args: MultiTaskTrainingArguments,
        train_dataset: Mapping[str, datasets.Dataset] | datasets.Dataset | None = None,
        eval_dataset: Mapping[str, datasets.Dataset] | datasets.Dataset | None = None,
        combiner: Combiner | None = None,
        clean_dataset: Any = None,
        per_example_loss: PerExampleLoss | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, MultiTaskTrainingArguments):
            raise TypeError("MultiTaskTrainer needs MultiTaskTrainingArguments.")
        if not isinstance(model, MultiTaskModel):
            raise TypeError(f"MultiTaskTrainer trains a MultiTaskModel, got {type(model).__name__}.")
        self.tasks: list[Task] = list(model.tasks.values())
        self.task_names = [t.name for t in self.tasks]
        if train_dataset is not None:
            self._check_dataset_tasks(train_dataset, "train_dataset", model)
        if eval_dataset is not None:
            self._check_dataset_tasks(eval_dataset, "eval_dataset", model)
        self.user_data_collator = kwargs.get("data_collator")
        self.user_compute_metrics = kwargs.pop("compute_metrics", None)
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
        self.compute_metrics = self._task_metrics
        self.combiner = combiner if combiner is not None else self._build_combiner()
        module = self.accelerator.unwrap_model(self.model)
        if self.combiner.needs_gradients and model.config.sharing == "soft":
            raise ValueError(
                f"Combiner {self.combiner.name!r} combines gradients of shared parameters, but the model uses soft "
                "sharing (no parameter is shared). Use hard sharing, or a loss-based combiner such as 'linear'."
            )
        self.loss_masker = build_loss_masker(self, module, clean_dataset, per_example_loss)
        if self.loss_masker is not None and self.combiner.name != "linear":
            raise ValueError(
                f"loss_masking={args.loss_masking!r} replaces the gradient combination; it trains with the task "
                f"weights (combiner='linear'), not combiner {self.combiner.name!r}."
            )
        task_weights = torch.tensor([t.weight for t in self.tasks], dtype=torch.float32)
        context = self.step_context(self.task_names, task_weights)
        if self.loss_masker is not None:
            self.step_strategy = get_step_strategy("masking")(context, module, self.combiner, masker=self.loss_masker)
        else:
            name = args.gradient_mode if self.combiner.needs_gradients else "loss_weighted"
            self.step_strategy = get_step_strategy(name)(context, module, self.combiner)
        self._loss_window = torch.zeros(len(self.tasks), dtype=torch.float64)
        self._loss_window_steps = 0
        self._eval_losses: dict[str, list[float]] = {}
        self._headline_keys: dict[str, str] = {}

    # --- set-up ---------------------------------------------------------------------------------------
    def _check_dataset_tasks(self, dataset: Any, what: str, model: MultiTaskModel) -> None:
        if isinstance(dataset, Mapping):
            model.check_tasks(list(dataset))
            for name, ds in dataset.items():
                if len(ds) == 0:
                    raise ValueError(f"{what}: task {name!r} has no examples.")
        elif isinstance(dataset, datasets.Dataset):
            missing = [f"label_{n}" for n in model.task_names if f"label_{n}" not in dataset.column_names]
            if missing and what == "train_dataset":
                raise ValueError(
                    f"{what} is a single (shared-input) Dataset but lacks label column(s) {missing}; "
                    f"it has {dataset.column_names}. For the disjoint layout pass {{task: Dataset}}."
                )
            if len(dataset) == 0:
                raise ValueError(f"{what} has no examples.")
        else:
            raise TypeError(f"{what} must be {{task: Dataset}} or a shared-input Dataset, got {type(dataset).__name__}.")

    def _build_combiner(self) -> Combiner:
        options = self.args.combiner_kwargs()
        if self.args.combiner == "linear" and "weights" not in options:
            options["weights"] = [t.weight for t in self.tasks]
        if self.args.combiner == "primary_auxiliary" and "primary" not in options:
            options["primary"] = [i for i, t in enumerate(self.tasks) if t.is_main]
        return get_combiner(self.args.combiner, **options)

    @property
    def is_shared_layout(self) -> bool:
        return isinstance(self.train_dataset, datasets.Dataset)

    def _loader_params(self) -> dict[str, Any]:
        return {"num_workers": self.args.dataloader_num_workers,
                "pin_memory": self.args.dataloader_pin_memory,
                "persistent_workers": self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0}

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        params = self._loader_params()
        if self.is_shared_layout:
            dataset = self.train_dataset
            collator = self.user_data_collator or SharedInputCollator(self.processing_class, self.tasks)
            loader = DataLoader(dataset, batch_size=self._train_batch_size, sampler=self._get_train_sampler(dataset),
                                collate_fn=collator, drop_last=self.args.dataloader_drop_last, **params)
        else:
            ordered = {n: self.train_dataset[n] for n in self.task_names if n in self.train_dataset}
            mixture = TaskMixture(ordered)
            sampler = MultiTaskBatchSampler(
                mixture.sizes,
                batch_size=self._train_batch_size,
                strategy=self.args.sampling_strategy,
                temperature=self.args.sampling_temperature,
                max_examples_per_task=self.args.max_examples_per_task,
                seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            )
            if self.user_data_collator is not None:
                collator = self.user_data_collator
            else:
                collator = MultiTaskCollator(self.processing_class, self.tasks)
            loader = DataLoader(mixture, batch_sampler=sampler, collate_fn=collator, **params)
        return self.accelerator.prepare(loader)

    def _prepare_inputs(self, inputs: Any) -> Any:
        if not isinstance(inputs, Mapping) or not ("task_batches" in inputs or "inputs" in inputs):
            keys = sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__
            raise ValueError(
                f"A MultiTaskModel batch is {{'task_batches': {{task: batch}}}} or {{'inputs': batch, 'labels': "
                f"{{task: labels}}}}; the data collator returned {keys}. A custom data_collator must build one of "
                "these layouts (see hf_mtl.data.mixture.MultiTaskCollator)."
            )
        return super()._prepare_inputs(inputs)

    # --- one optimizer step ------------------------------------------------------------------------------
    def on_step_end(self, model: nn.Module, record: StepRecord) -> None:
        if self.args.tuning_free_l2 and not record.skipped:
            # Weight decay as an auxiliary task that must not rise (Su 2022 (III); docs/combiners.md):
            # g + relu(-<g,θ>)/||θ||²·θ, on the combined gradient of all trainable parameters, before clipping.
            record.extras["l2_coefficient"] = apply_tuning_free_l2_(p for p in model.parameters() if p.requires_grad)
        if record.losses is not None and torch.isfinite(record.losses).all():
            self._loss_window += record.losses
            self._loss_window_steps += 1

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """``6 · tokens · non-embedding parameters`` summed over the sub-batches (Kaplan et al. 2020)."""
        if "task_batches" in inputs:
            tokens = sum(b["input_ids"].numel() for b in inputs["task_batches"].values())
        else:
            tokens = inputs["inputs"]["input_ids"].numel()
        return 6 * tokens * self.model.num_parameters(exclude_embeddings=True)

    # --- logging --------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            if self._loss_window_steps > 0:
                means = self._loss_window / self._loss_window_steps
                for name, value in zip(self.task_names, means.tolist(), strict=True):
                    logs[f"loss_{name}"] = round(value, 6)
                self._loss_window.zero_()
                self._loss_window_steps = 0
            record = self.last_step
            if record is not None:
                if record.weights is not None:
                    for name, value in zip(self.task_names, record.weights.tolist(), strict=True):
                        logs[f"weight_{name}"] = value
                if record.gram is not None:
                    logs.update(gram_diagnostics(record.gram, self.task_names))
                if "l2_coefficient" in record.extras:
                    logs["l2_coefficient"] = float(record.extras["l2_coefficient"])
        super().log(logs, start_time)

    # --- checkpoints ------------------------------------------------------------------------------------
    def checkpoint_requirements(self) -> dict[str, bool]:
        """A stateful combiner's state is part of a complete checkpoint."""
        return {**super().checkpoint_requirements(), "needs_combiner": self.combiner.stateful}

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.combiner.stateful and self.args.should_save:
            torch.save(self.combiner.state_dict(), os.path.join(output_dir, COMBINER_STATE_NAME))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or not self.combiner.stateful:
            return
        path = os.path.join(checkpoint, COMBINER_STATE_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Checkpoint {checkpoint} has no {COMBINER_STATE_NAME}, but combiner {self.combiner.name!r} is "
                "stateful; it cannot resume exactly."
            )
        self.combiner.load_state_dict(torch.load(path, weights_only=False))

    # --- saving -----------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """``Trainer.save_model`` (weights, config, the ``processing_class``) plus the model card ``README.md``
        (:meth:`create_model_card`) when called by the user; checkpoints get no card."""
        super().save_model(output_dir, _internal_call)
        if not _internal_call and self.args.should_save:
            self.create_model_card(output_dir=output_dir)

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
        output_dir: str | None = None,
    ) -> None:
        """Write ``README.md`` in the Hub's model-card format (:func:`hf_mtl.model_card.build_model_card`): tasks,
        labels, combiner and the last evaluation's per-task metrics. Replaces ``Trainer``'s card, which knows
        nothing of tasks; ``push_to_hub`` calls it. ``tasks`` and ``dataset_args`` of the base signature are unused
        (the model's own tasks are listed)."""
        if not self.is_world_process_zero():
            return
        module = self.accelerator.unwrap_model(self.model)
        evaluations = [entry for entry in self.state.log_history if any(k.startswith("eval_") for k in entry)]
        datasets_ = [dataset_tags] if isinstance(dataset_tags, str) else dataset_tags
        datasets_ = datasets_ or ([dataset] if isinstance(dataset, str) else dataset)
        card = build_model_card(
            self.tasks, combiner=self.combiner.name, metrics=evaluations[-1] if evaluations else None,
            model_name=model_name or os.path.basename(os.path.normpath(output_dir or self.args.output_dir)),
            base_model=finetuned_from or hub_base_model(getattr(module.config.encoder_config, "_name_or_path", None)),
            datasets=datasets_, tags=[tags] if isinstance(tags, str) else tags, language=language, license=license,
            adapter=getattr(module.config, "encoder_adapter", None),
        )
        card.save(os.path.join(output_dir or self.args.output_dir, "README.md"))

    # --- evaluation and prediction ---------------------------------------------------------------------
    def evaluate(
        self,
        eval_dataset: Mapping[str, datasets.Dataset] | datasets.Dataset | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Per-task evaluation: ``{prefix}_{task}_{metric}``, ``{prefix}_{task}_loss``, ``{prefix}_average``.

        ``{prefix}_average`` is the mean over tasks of each task's first (headline) metric, usable as
        ``metric_for_best_model="average"``; ``{prefix}_loss`` is ``Σ_k weight_k · L_k``.
        """
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        self._memory_tracker.start()
        start = time.time()
        output = self._predict_tasks(dataset, "Evaluation", ignore_keys, metric_key_prefix)
        self._add_speed_metrics(output, metric_key_prefix, start)
        self.log(output.metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, output.metrics)
        self._memory_tracker.stop_and_update_metrics(output.metrics)
        return output.metrics

    def predict(
        self,
        test_dataset: Mapping[str, datasets.Dataset] | datasets.Dataset,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "test",
    ) -> PredictionOutput:
        """Per-task predictions: ``predictions[task]`` (class ids, values, token class ids or generated token ids,
        padded with -100) and ``label_ids[task]``, plus the metrics of :meth:`evaluate`."""
        self._memory_tracker.start()
        start = time.time()
        output = self._predict_tasks(test_dataset, "Prediction", ignore_keys, metric_key_prefix)
        self._add_speed_metrics(output, metric_key_prefix, start)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, output.metrics)
        self._memory_tracker.stop_and_update_metrics(output.metrics)
        return PredictionOutput(predictions=output.predictions, label_ids=output.label_ids, metrics=output.metrics)

    def _add_speed_metrics(self, output: EvalLoopOutput, prefix: str, start: float) -> None:
        total_batch_size = self.args.eval_batch_size * self.args.world_size
        output.metrics.update(speed_metrics(prefix, start, num_samples=output.num_samples,
                                            num_steps=math.ceil(output.num_samples / total_batch_size)))

    def _predict_tasks(
        self, dataset: Mapping[str, datasets.Dataset] | datasets.Dataset, description: str,
        ignore_keys: list[str] | None, prefix: str,
    ) -> EvalLoopOutput:
        """The Trainer's ``evaluation_loop`` per task (disjoint) or once (shared inputs), merged."""
        module: MultiTaskModel = self.accelerator.unwrap_model(self.model)
        self._check_dataset_tasks(dataset, "eval_dataset", module)
        if isinstance(dataset, datasets.Dataset):
            loaders = [self._eval_loader(dataset, SharedInputCollator(self.processing_class, self.tasks))]
        else:
            loaders = [self._eval_loader(dataset[t.name], single_task_collator(self.processing_class, t))
                       for t in self.tasks if t.name in dataset]
        self._eval_losses = {}
        self._headline_keys = {}
        predictions: dict[str, np.ndarray] = {}
        label_ids: dict[str, np.ndarray] = {}
        metrics: dict[str, float] = {}
        num_samples = 0
        for loader in loaders:
            output = self.evaluation_loop(loader, description, prediction_loss_only=False, ignore_keys=ignore_keys,
                                          metric_key_prefix=prefix)
            predictions.update(output.predictions or {})
            label_ids.update(output.label_ids or {})
            metrics.update({k: v for k, v in output.metrics.items() if k != f"{prefix}_loss"})
            num_samples += output.num_samples
        total_loss = 0.0
        for task in self.tasks:
            if task.name in self._eval_losses:
                sums = torch.tensor(self._eval_losses[task.name], dtype=torch.float64)
                sums = self.step_strategy.context.sum_over_ranks(sums)
                task_loss = float(sums[0] / sums[1].clamp_min(1.0))
                metrics[f"{prefix}_{task.name}_loss"] = task_loss
                total_loss += task.weight * task_loss
        metrics[f"{prefix}_loss"] = total_loss
        if self.user_compute_metrics is not None and label_ids:
            user = self.user_compute_metrics(EvalPrediction(predictions=predictions, label_ids=label_ids))
            metrics.update({key if key.startswith(f"{prefix}_") else f"{prefix}_{key}": value
                            for key, value in user.items()})
        headline = [metrics[f"{prefix}_{name}_{key}"] for name, key in self._headline_keys.items()
                    if f"{prefix}_{name}_{key}" in metrics]
        if headline:
            metrics[f"{prefix}_average"] = float(np.mean(headline))
        return EvalLoopOutput(predictions=predictions, label_ids=label_ids, metrics=metrics, num_samples=num_samples)

    def _eval_loader(self, dataset: datasets.Dataset, collator: Any) -> DataLoader:
        loader = DataLoader(dataset, batch_size=self.args.eval_batch_size, sampler=SequentialSampler(dataset),
                            collate_fn=self.user_data_collator or collator, **self._loader_params())
        return self.accelerator.prepare(loader)

    def prediction_step(
        self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor] | None, dict[str, torch.Tensor] | None]:
        """``(loss, {task: predictions}, {task: labels})`` for one evaluation batch.

        Predictions are what each head's ``predict`` returns (class ids, regression values, per-token ids,
        generated token ids for seq2seq heads), so ``preprocess_logits_for_metrics`` receives these dicts.
        """
        inputs = self._prepare_inputs(inputs)
        module: MultiTaskModel = self.accelerator.unwrap_model(model)
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**inputs)
            if "task_batches" in inputs:
                batches = dict(inputs["task_batches"])
            else:
                batches = {n: module.task_batch(inputs["inputs"], inputs.get("labels") or {}, n)
                           for n in outputs.logits}
            labels = {n: b["labels"] for n, b in batches.items() if b.get("labels") is not None}
            for name, loss in outputs.task_losses.items():
                size = float(len(labels[name]))
                sums = self._eval_losses.setdefault(name, [0.0, 0.0])
                sums[0] += float(loss) * size
                sums[1] += size
            loss = outputs.loss.detach() if outputs.loss is not None else None
            if prediction_loss_only:
                return loss, None, None
            predictions = {}
            for name, logits in outputs.logits.items():
                group = name if name in outputs.representations else SHARED_GROUP
                predictions[name] = module.heads[name].predict(outputs.representations[group], logits, batches[name])
        return loss, predictions, (labels or None)

    def _task_metrics(self, prediction: EvalPrediction) -> dict[str, float]:
        """Each task's own metrics (``{task}_{metric}``); the user's ``compute_metrics`` runs once over all tasks."""
        module: MultiTaskModel = self.accelerator.unwrap_model(self.model)
        metrics: dict[str, float] = {}
        for name, predicted in prediction.predictions.items():
            if name not in prediction.label_ids:
                continue
            head = module.heads[name]
            flat_predictions, references = head.metric_arrays(torch.as_tensor(predicted),
                                                              torch.as_tensor(prediction.label_ids[name]))
            values = head.compute_metrics(flat_predictions, references, tokenizer=self.processing_class)
            if values:
                self._headline_keys.setdefault(name, next(iter(values)))
            metrics.update({f"{name}_{key}": value for key, value in values.items()})
        return metrics
