"""``MultiTaskTrainer``: a ``transformers.Trainer`` whose step combines per-task gradients.

One optimizer step: batch → per-task losses → per-task gradients (:mod:`hf_mtl.gradients`) → K×K Gram
→ combiner (:mod:`hf_mtl.combiners`) → weights → one update written into ``.grad``; the Trainer then
clips, steps the optimizer and the scheduler as usual. Loss-based combiners (and ``linear``) need no
per-task gradients: one plain backward of ``Σ w_k L_k``.
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
from transformers import Trainer
from transformers.trainer_utils import speed_metrics

from hf_mtl.checkpoints import checkpoint_problems, last_complete_checkpoint
from hf_mtl.combiners import Combiner, get_combiner
from hf_mtl.data.mixture import (
    MultiTaskBatchSampler,
    MultiTaskCollator,
    SharedInputCollator,
    TaskMixture,
    single_task_collator,
)
from hf_mtl.gradients import (
    TaskGradientBuffer,
    all_reduce_sum,
    flatten_grads,
    gram_diagnostics,
    representation_gram,
    unflatten_into_grads,
)
from hf_mtl.masking.trainer import LossMaskingMixin
from hf_mtl.metrics import compute_metric
from hf_mtl.modeling import SHARED_GROUP, MultiTaskModel
from hf_mtl.regularization import apply_tuning_free_l2_
from hf_mtl.tasks import Task, TaskKind
from hf_mtl.training_args import MultiTaskTrainingArguments

logger = logging.getLogger(__name__)

COMBINER_STATE_NAME = "combiner_state.pt"


class MultiTaskTrainer(LossMaskingMixin, Trainer):
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
        Other arguments are those of ``transformers.Trainer``; ``processing_class`` must be the tokenizer.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        args: MultiTaskTrainingArguments,
        train_dataset: Mapping[str, datasets.Dataset] | datasets.Dataset | None = None,
        eval_dataset: Mapping[str, datasets.Dataset] | datasets.Dataset | None = None,
        combiner: Combiner | None = None,
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
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
        self.combiner = combiner if combiner is not None else self._build_combiner()
        self.gradient_mode = args.gradient_mode
        if self.combiner.needs_gradients and model.config.sharing == "soft":
            raise ValueError(
                f"Combiner {self.combiner.name!r} combines gradients of shared parameters, but the model uses soft "
                "sharing (no parameter is shared). Use hard sharing, or a loss-based combiner such as 'linear'."
            )
        if self.combiner.needs_gradients and self.gradient_mode == "params":
            check_params_mode_engine(self.is_fsdp_enabled, self.is_deepspeed_enabled)
        self._buffer: TaskGradientBuffer | None = None
        self._running_gram: torch.Tensor | None = None
        self._step_losses = torch.zeros(len(self.tasks), dtype=torch.float64)
        self._log_losses = torch.zeros(len(self.tasks), dtype=torch.float64)
        self._log_count = 0
        self.last_step: dict[str, Any] = {}
        self._warned_diagonal = False
        self._skip_pending = False

    # --- set-up ---------------------------------------------------------------------------------------
    def _check_dataset_tasks(self, dataset: Any, what: str, model: MultiTaskModel) -> None:
        if isinstance(dataset, Mapping):
            model.check_tasks(list(dataset))
            for name, ds in dataset.items():
                if len(ds) == 0:
                    raise ValueError(f"{what}: task {name!r} has no examples.")
        elif isinstance(dataset, datasets.Dataset):
            missing = [f"label_{n}" for n in model.task_names if f"label_{n}" not in dataset.column_names]
            if missing:
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

    def _tokenizer(self) -> Any:
        if self.processing_class is None:
            raise ValueError("MultiTaskTrainer needs the tokenizer as `processing_class` to pad sub-batches.")
        return self.processing_class

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        params = {
            "num_workers": self.args.dataloader_num_workers,
            "pin_memory": self.args.dataloader_pin_memory,
            "persistent_workers": self.args.dataloader_persistent_workers,
        }
        if self.is_shared_layout:
            dataset = self.train_dataset
            collator = SharedInputCollator(self._tokenizer(), self.tasks)
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
            regression = frozenset(t.name for t in self.tasks if t.kind is TaskKind.REGRESSION)
            collator = MultiTaskCollator(self._tokenizer(), self.task_names, regression)
            loader = DataLoader(mixture, batch_sampler=sampler, collate_fn=collator, **params)
        return self.accelerator.prepare(loader)

    # --- the training step --------------------------------------------------------------------------
    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """``Σ_k w_k L_k`` with loss-based weights (``linear``, ``uncertainty``, ``dwa``, ...).

        A non-finite task loss follows ``nonfinite_policy``: ``raise``; ``skip_step`` (no backward through
        it, and no parameter moves at this optimizer step); ``drop_task`` (the other tasks still train;
        stateful combiners, whose state assumes every task, skip the step instead).
        """
        outputs = model(**inputs)
        losses = self._ordered_losses(outputs.task_losses)
        finite = torch.isfinite(losses.detach()).cpu()
        if not bool(finite.all()):
            bad = [n for n, ok in zip(self.task_names, finite.tolist(), strict=True) if not ok]
            policy = self._nonfinite(bad)
            if policy == "skip_step" or self.combiner.stateful:
                self._skip_pending = True
                loss = sum(p.sum() * 0.0 for p in self.accelerator.unwrap_model(model).heads.parameters())
                return (loss, outputs) if return_outputs else loss
            keep = finite.to(losses.device)
            weights = torch.zeros_like(losses.detach())
            combiner = self.combiner.restricted(torch.nonzero(finite).flatten().tolist())
            if combiner is None:
                self._skip_pending = True
                loss = sum(p.sum() * 0.0 for p in self.accelerator.unwrap_model(model).heads.parameters())
                return (loss, outputs) if return_outputs else loss
            weights[keep] = combiner(None, losses.detach()[keep]).to(losses.dtype)
            # Sum the finite losses themselves: the stacked vector's backward would carry 0·NaN into the
            # dropped task's graph.
            loss = sum(weights[k] * outputs.task_losses[n] for k, n in enumerate(self.task_names) if finite[k])
        else:
            weights = self.combiner(None, losses.detach()).to(losses.dtype)
            loss = (weights * losses).sum()
        if outputs.soft_sharing_penalty is not None:
            loss = loss + outputs.soft_sharing_penalty
        self._record_losses(losses)
        self.last_step = {"weights": weights.detach().double().cpu()}
        return (loss, outputs) if return_outputs else loss

    def _nonfinite(self, bad_tasks: list[str]) -> str:
        """Apply ``nonfinite_policy`` to tasks with a NaN/inf loss or gradient; returns the policy."""
        message = (f"Step {self.state.global_step}: non-finite loss or gradient for task(s) {bad_tasks} "
                   f"(policy nonfinite_policy={self.args.nonfinite_policy!r}).")
        if self.args.nonfinite_policy == "raise":
            raise FloatingPointError(message)
        logger.warning(message)
        self.last_step = {"skipped": self.args.nonfinite_policy == "skip_step", "nonfinite_tasks": bad_tasks}
        return self.args.nonfinite_policy

    def _ordered_losses(self, task_losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [n for n in self.task_names if n not in task_losses]
        if missing:
            raise ValueError(
                f"Step {self.state.global_step}: task(s) {missing} have no sub-batch in this batch; every step "
                "must see every task (raise per_device_train_batch_size or check the sampler)."
            )
        return torch.stack([task_losses[n] for n in self.task_names])

    def _record_losses(self, losses: torch.Tensor) -> None:
        values = losses.detach().double().cpu()
        self._log_losses += values
        self._log_count += 1

    def _grad_scale(self) -> float:
        scaler = getattr(self.accelerator, "scaler", None)
        return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0

    def _micro_batch_scale(self) -> float:
        return 1.0 / self.current_gradient_accumulation_steps

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        if self.loss_masker is not None:  # loss_masking='example'/'batch' (hf_mtl.masking)
            loss = self._masked_training_step(model, inputs)
        elif not self.combiner.needs_gradients:
            loss = super().training_step(model, inputs, num_items_in_batch)
            if self._skip_pending and self.accelerator.sync_gradients:
                self._skip_update(self.accelerator.unwrap_model(model))
                self._skip_pending = False
        else:
            model.train()
            inputs = self._prepare_inputs(inputs)
            if self.gradient_mode == "params":
                loss = self._params_step(model, inputs)
            else:
                loss = self._encoder_output_step(model, inputs)
        if self.args.tuning_free_l2 and self.accelerator.sync_gradients:
            # Weight decay as an auxiliary task that must not rise (article 003): g + relu(-<g,θ>)/||θ||²·θ,
            # on the combined gradient of all trainable parameters, before clipping.
            coefficient = apply_tuning_free_l2_(p for p in model.parameters() if p.requires_grad)
            self.last_step["l2_coefficient"] = coefficient
        return loss

    def _params_step(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """Per-task gradients of the shared parameters (``params`` mode), combined at the sync step."""
        module: MultiTaskModel = self.accelerator.unwrap_model(model)
        if self._buffer is None:
            self._buffer = TaskGradientBuffer(module.shared_parameters(), len(self.tasks))
        shared = self._buffer.params
        scale = self._micro_batch_scale() * self._grad_scale()
        losses = []
        if "task_batches" in inputs:
            module.check_tasks(list(inputs["task_batches"]))
            for k, name in enumerate(self.task_names):
                sub_batch = inputs["task_batches"].get(name)
                if sub_batch is None:
                    raise ValueError(f"Step {self.state.global_step}: task {name!r} has no sub-batch in this batch.")
                with self._autocast():
                    z = module.encode(sub_batch, task=name)
                    loss, _ = module.head_loss(name, z, sub_batch)
                self._accumulate_task_gradient(module, k, name, loss * scale, shared, retain_graph=False)
                losses.append(loss.detach())
        else:
            labels = inputs["labels"]
            module.check_tasks(list(labels))
            with self._autocast():
                z = module.encode(inputs["inputs"])
                task_losses = [
                    module.head_loss(n, z, module.task_batch(inputs["inputs"], labels, n))[0] for n in self.task_names
                ]
            for k, (name, loss) in enumerate(zip(self.task_names, task_losses, strict=True)):
                last = k == len(self.task_names) - 1
                self._accumulate_task_gradient(module, k, name, loss * scale, shared, retain_graph=not last)
                losses.append(loss.detach())
        stacked = torch.stack(losses)
        self._step_losses += stacked.double().cpu() * self._micro_batch_scale()
        self._record_losses(stacked)
        if self.accelerator.sync_gradients:
            self._combine_params_gradients(module)
        weights = torch.tensor([t.weight for t in self.tasks], device=stacked.device, dtype=stacked.dtype)
        return (weights * stacked).sum() * self._micro_batch_scale()

    def _autocast(self) -> Any:
        """Mixed-precision autocast for computations that bypass the wrapped model's ``forward`` (which
        accelerate patches with autocast), as the per-task ``encode``/``head_loss`` calls do."""
        return self.accelerator.autocast()

    def _accumulate_task_gradient(
        self, module: MultiTaskModel, k: int, name: str, loss: torch.Tensor, shared: list[nn.Parameter],
        retain_graph: bool,
    ) -> None:
        specific = module.task_specific_parameters(name)
        grads = torch.autograd.grad(loss, shared + specific, retain_graph=retain_graph, allow_unused=True)
        self._buffer.add(k, grads[: len(shared)])
        for param, grad in zip(specific, grads[len(shared):], strict=True):
            if grad is None:
                continue
            param.grad = grad if param.grad is None else param.grad + grad

    def _combine_params_gradients(self, module: MultiTaskModel) -> None:
        buffer = self._buffer
        specific = [p for n in self.task_names for p in module.task_specific_parameters(n)]
        reduced = buffer.all_reduce_with(flatten_grads(specific))
        if reduced is not None:
            unflatten_into_grads(specific, reduced)
        grad_scale = self._grad_scale()
        gram = buffer.gram() / (grad_scale * grad_scale)
        losses = all_reduce_sum(self._step_losses.to(buffer.jacobian.device)).cpu() / self.args.world_size
        weights = self._solve(gram, losses, present=buffer.seen)
        if weights is None:
            self._skip_update(module)
        else:
            buffer.write_combination(weights)
            for k, name in enumerate(self.task_names):
                if not (torch.isfinite(gram[k, k]) and torch.isfinite(losses[k])):
                    for param in module.task_specific_parameters(name):  # its head saw a NaN/inf loss
                        param.grad = None
        buffer.reset()
        self._step_losses.zero_()

    def _encoder_output_step(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """Gram of ``∂L_k/∂z`` (heads only), then one ordinary backward of ``Σ w_k L_k``."""
        module: MultiTaskModel = self.accelerator.unwrap_model(model)
        with self.compute_loss_context_manager(), module.capture_representations() as representations:
            outputs = model(**inputs)
        losses = self._ordered_losses(outputs.task_losses)
        groups = list(representations.values())
        if SHARED_GROUP not in representations and len(self.tasks) > 1 and not self._warned_diagonal:
            logger.warning(
                "gradient_mode='encoder_output' with disjoint task data: each task's loss depends only on its own "
                "examples' encoder outputs, so the Gram matrix is diagonal and the combiner sees only gradient "
                "norms, not conflicts. Use gradient_mode='params' to see task conflicts."
            )
            self._warned_diagonal = True
        # Gram of the effective-batch loss: micro-batch losses carry 1/(accumulation · world) each; the
        # representation Grams of different micro-batches and ranks then simply add up.
        grad_scale = self._grad_scale()
        share = self._micro_batch_scale() / self.args.world_size
        gram = representation_gram([loss * grad_scale for loss in losses], groups)
        gram = gram * (share / grad_scale) ** 2
        gram = all_reduce_sum(gram.to(losses.device)).cpu()
        self._running_gram = gram if self._running_gram is None else self._running_gram + gram
        self._step_losses += losses.detach().double().cpu() * self._micro_batch_scale()
        self._record_losses(losses)
        step_losses = all_reduce_sum(self._step_losses.clone().to(losses.device)).cpu() / self.args.world_size
        present = torch.ones(len(self.tasks), dtype=torch.bool)
        weights = self._solve(self._running_gram, step_losses, present=present)
        if weights is None:
            weights = torch.zeros(len(self.tasks), dtype=torch.float64)
        used = torch.nonzero(weights).flatten().tolist()  # a NaN loss left out must not enter even as 0·NaN
        total = sum((float(weights[k]) * outputs.task_losses[self.task_names[k]] for k in used), losses.new_zeros(()))
        total = total * self._micro_batch_scale()
        if outputs.soft_sharing_penalty is not None:
            total = total + outputs.soft_sharing_penalty * self._micro_batch_scale()
        self.accelerator.backward(total)
        if self.accelerator.sync_gradients:
            if not bool(weights.any()):
                self._skip_update(self.accelerator.unwrap_model(model))
            self._running_gram = None
            self._step_losses.zero_()
        task_weights = torch.tensor([t.weight for t in self.tasks], device=losses.device, dtype=losses.dtype)
        return (task_weights * losses.detach()).sum() * self._micro_batch_scale()

    def _solve(self, gram: torch.Tensor, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor | None:
        """Combiner weights for the tasks with a finite, non-zero gradient; ``None`` means skip the update."""
        diag = gram.diagonal()
        finite = torch.isfinite(diag) & torch.isfinite(losses)
        active = present & finite & (diag > 0)
        bad = [self.task_names[i] for i in range(len(self.tasks)) if not bool(finite[i])]
        if bad and (self._nonfinite(bad) == "skip_step" or self.combiner.stateful):
            return None
        weights = torch.zeros(len(self.tasks), dtype=torch.float64)
        index = torch.nonzero(active).flatten()
        if len(index) == 0:
            self.last_step = {"skipped": True, "reason": "no task has a non-zero finite gradient"}
            return None
        if self.combiner.stateful and len(index) < len(self.tasks):
            # Stateful combiners track every task: hand them the full Gram with the idle tasks' rows zeroed.
            mask = active.double()
            solved = self.combiner(gram.nan_to_num() * mask[:, None] * mask[None, :],
                                   losses=torch.where(active, losses, torch.zeros_like(losses)))
            solved = solved.double().cpu()[index]
        else:
            combiner = self.combiner if len(index) == len(self.tasks) else self.combiner.restricted(index.tolist())
            if combiner is None:
                self.last_step = {"skipped": True, "reason": "no main task has a usable gradient"}
                return None
            solved = combiner(gram[index][:, index], losses=losses[index]).double().cpu()
        if not torch.isfinite(solved).all():
            raise FloatingPointError(
                f"Step {self.state.global_step}: combiner {self.combiner.name!r} returned non-finite weights "
                f"{solved.tolist()} for tasks {[self.task_names[i] for i in index.tolist()]}."
            )
        weights[index] = solved
        self.last_step = {"gram": gram, "weights": weights, "losses": losses}
        return weights

    def _skip_update(self, module: nn.Module) -> None:
        """No parameter moves this step: optimizers skip parameters whose ``.grad`` is ``None``."""
        for param in module.parameters():
            param.grad = None

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """``6 · tokens · non-embedding parameters`` summed over the sub-batches (Kaplan et al. 2020)."""
        if "task_batches" in inputs:
            tokens = sum(b["input_ids"].numel() for b in inputs["task_batches"].values())
        else:
            tokens = inputs["inputs"]["input_ids"].numel()
        return 6 * tokens * self.model.num_parameters(exclude_embeddings=True)

    # --- logging --------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._log_count > 0:
            means = self._log_losses / self._log_count
            for name, value in zip(self.task_names, means.tolist(), strict=True):
                logs[f"loss_{name}"] = round(value, 6)
            self._log_losses.zero_()
            self._log_count = 0
            weights = self.last_step.get("weights")
            if weights is not None:
                for name, value in zip(self.task_names, weights.tolist(), strict=True):
                    logs[f"weight_{name}"] = value
            gram = self.last_step.get("gram")
            if gram is not None:
                logs.update(gram_diagnostics(gram, self.task_names))
            if "l2_coefficient" in self.last_step:
                logs["l2_coefficient"] = float(self.last_step["l2_coefficient"])
        super().log(logs, start_time)

    # --- checkpoints ------------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
        """``Trainer.train``, resuming only from complete checkpoints.

        ``resume_from_checkpoint=True`` picks the newest complete ``checkpoint-N`` (one left half-written
        by a killed process is skipped with a warning); an explicit incomplete path is an error naming
        what is missing.
        """
        needs = {"needs_optimizer": not self.args.save_only_model, "needs_combiner": self.combiner.stateful}
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir, **needs)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint found in output directory {self.args.output_dir}.")
        elif isinstance(resume_from_checkpoint, str):
            problems = checkpoint_problems(resume_from_checkpoint, **needs)
            if problems:
                raise ValueError(f"Cannot resume from {resume_from_checkpoint}: {'; '.join(problems)}.")
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

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

    # --- evaluation ------------------------------------------------------------------------------------
    def evaluate(
        self,
        eval_dataset: Mapping[str, datasets.Dataset] | datasets.Dataset | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Per-task evaluation: ``{prefix}_{task}_{metric}``, ``{prefix}_{task}_loss``, ``{prefix}_average``.

        ``{prefix}_average`` is the mean over tasks of each task's first metric; ``{prefix}_loss`` is
        ``Σ_k weight_k · L_k``.
        """
        self._memory_tracker.start()
        eval_dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if eval_dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        self._check_dataset_tasks(eval_dataset, "eval_dataset", self.accelerator.unwrap_model(self.model))
        start = time.time()
        model = self.model
        model.eval()
        collected: dict[str, dict[str, list]] = {}
        num_samples = 0
        if isinstance(eval_dataset, datasets.Dataset):
            loader = self._eval_loader(eval_dataset, SharedInputCollator(self._tokenizer(), self.tasks))
            num_samples = len(eval_dataset)
            self._run_eval_loop(model, loader, collected)
        else:
            for task in self.tasks:
                if task.name not in eval_dataset:
                    continue
                loader = self._eval_loader(eval_dataset[task.name], single_task_collator(self._tokenizer(), task))
                num_samples += len(eval_dataset[task.name])
                self._run_eval_loop(model, loader, collected)
        metrics: dict[str, float] = {}
        headline = []
        total_loss = 0.0
        for task in self.tasks:
            if task.name not in collected:
                continue
            data = collected[task.name]
            predictions = np.concatenate(data["predictions"])
            references = np.concatenate(data["references"])
            task_loss = float(np.sum(data["loss_sum"]) / max(np.sum(data["count"]), 1))
            metrics[f"{metric_key_prefix}_{task.name}_loss"] = task_loss
            total_loss += task.weight * task_loss
            for i, name in enumerate(task.metrics):
                for key, value in compute_metric(name, predictions, references).items():
                    metrics[f"{metric_key_prefix}_{task.name}_{key}"] = value
                    if i == 0 and key == name:
                        headline.append(value)
        metrics[f"{metric_key_prefix}_loss"] = total_loss
        if headline:
            metrics[f"{metric_key_prefix}_average"] = float(np.mean(headline))
        num_steps = sum(math.ceil(n / self.args.eval_batch_size) for n in [num_samples])
        metrics.update(speed_metrics(metric_key_prefix, start, num_samples=num_samples, num_steps=num_steps))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics

    def _eval_loader(self, dataset: datasets.Dataset, collator: Any) -> DataLoader:
        loader = DataLoader(dataset, batch_size=self.args.eval_batch_size, sampler=SequentialSampler(dataset),
                            collate_fn=collator, num_workers=self.args.dataloader_num_workers)
        return self.accelerator.prepare(loader)

    def _run_eval_loop(self, model: nn.Module, loader: DataLoader, collected: dict[str, dict[str, list]]) -> None:
        for batch in loader:
            batch = self._prepare_inputs(batch)
            with torch.no_grad(), self.autocast_smart_context_manager():
                outputs = model(**batch)
            if "task_batches" in batch:
                labels = {n: b["labels"] for n, b in batch["task_batches"].items()}
            else:
                labels = batch["labels"]
            for name, logits in outputs.logits.items():
                task = self.accelerator.unwrap_model(model).tasks[name]
                predictions, references = _predictions(task, logits, labels[name])
                if task.kind is TaskKind.TOKEN_CLASSIFICATION:  # lengths differ across ranks
                    predictions = self.accelerator.pad_across_processes(predictions, dim=0, pad_index=-100)
                    references = self.accelerator.pad_across_processes(references, dim=0, pad_index=-100)
                predictions = self.accelerator.gather_for_metrics(predictions)
                references = self.accelerator.gather_for_metrics(references)
                keep = references != -100 if task.kind is not TaskKind.REGRESSION else ~torch.isnan(references)
                store = collected.setdefault(name, {"predictions": [], "references": [], "loss_sum": [], "count": []})
                store["predictions"].append(predictions[keep].cpu().numpy())
                store["references"].append(references[keep].cpu().numpy())
                n = int(keep.sum())
                loss = outputs.task_losses.get(name)
                if loss is not None and n > 0:
                    store["loss_sum"].append(float(loss) * n)
                    store["count"].append(n)


def check_params_mode_engine(fsdp: bool, deepspeed: bool) -> None:
    """``params`` mode needs whole parameters and its own gradient reduction: not FSDP or DeepSpeed."""
    if fsdp or deepspeed:
        engine = "FSDP" if fsdp else "DeepSpeed"
        raise ValueError(
            f"gradient_mode='params' is not supported under {engine}: per-task gradient buffers need whole, "
            "unsharded parameters. Use gradient_mode='encoder_output' (its final backward is a plain backward "
            "any engine runs) or a loss-based combiner."
        )


def _predictions(task: Task, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened predictions and references for one batch (tokens flattened for token tasks)."""
    if task.kind is TaskKind.REGRESSION:
        return logits.float().view(-1), labels.float().view(-1)
    predictions = logits.argmax(dim=-1)
    return predictions.reshape(-1), labels.reshape(-1)
