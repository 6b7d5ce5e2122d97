"""Loss masking inside a ``transformers.Trainer``: a mixin, and :class:`LossMaskingTrainer` for any HF model.

The mode is a Trainer *mixin* rather than a head of :class:`~hf_mtl.MultiTaskModel` so that one code path
trains any model with a per-example loss (:mod:`hf_mtl.masking.per_example`): ``MultiTaskModel`` heads
(``MultiTaskTrainer`` inherits the mixin), an ``EncoderDecoderModel`` or any seq2seq / sequence-classification
model (``LossMaskingTrainer``). The Trainer supplies the batches, the accumulation window, autocast, the
gradient scaler and the process group; :class:`~hf_mtl.masking.masker.LossMasker` does the rest.

Supported engines: one process, or DDP (``torchrun`` / ``accelerate launch``, gloo or NCCL). The JVP and
the gradients are taken on the unwrapped module and averaged over ranks in one all-reduce per step, so the
DDP wrapper's own backward hooks never fire. FSDP, DeepSpeed and XLA are rejected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import datasets
import torch
from accelerate.utils import DistributedType
from torch import nn
from transformers import Trainer

from hf_mtl.data.mixture import MultiTaskBatchSampler, MultiTaskCollator, SharedInputCollator, TaskMixture
from hf_mtl.masking.clean_data import CleanBatchStream, IndexBatches, shuffled_index_batches
from hf_mtl.masking.masker import LossMasker, MaskingConfig, MaskRecord
from hf_mtl.masking.per_example import PerExampleLoss, default_example_loss
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.tasks import TaskKind

MASKING_STATE_NAME = "loss_masking_state.json"
#: Mixed into the seed of the clean stream so that it never mirrors the training order.
CLEAN_SEED_OFFSET = 7919
UNSUPPORTED_ENGINES = (DistributedType.DEEPSPEED, DistributedType.FSDP, DistributedType.XLA,
                       DistributedType.MEGATRON_LM)


class LossMaskingMixin:
    """Adds ``loss_masking`` (``example`` / ``batch``) to a ``transformers.Trainer`` subclass.

    Keyword arguments (on top of the Trainer's):
        clean_dataset: the small trusted set, in the same layout and for the same task(s) as ``train_dataset``.
        per_example_loss: ``fn(module, batch) -> ExampleLosses``; by default chosen from the model
            (:func:`~hf_mtl.masking.per_example.default_example_loss`).

    The training arguments need the ``masking_*`` fields (:class:`~hf_mtl.masking.LossMaskingArguments`).
    The ``loss`` logged is the plain (unmasked) noisy loss, comparable with an unmasked run; the masked
    fraction (or, in ``batch`` mode, ``λ``) is logged next to it.
    """

    def __init__(
        self, *args: Any, clean_dataset: Any = None, per_example_loss: PerExampleLoss | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.loss_masker: LossMasker | None = None
        self._masking_step_open = False
        mode = getattr(self.args, "loss_masking", None)
        if mode is None:
            if clean_dataset is not None:
                raise ValueError(
                    f"clean_dataset was given but {type(self.args).__name__} has no loss-masking fields; use "
                    "LossMaskingTrainingArguments (or MultiTaskTrainingArguments) with loss_masking='example'/'batch'."
                )
            return
        if mode == "none":
            if clean_dataset is not None:
                raise ValueError(
                    "clean_dataset was given but loss_masking='none'; set loss_masking='example' or 'batch' to use it."
                )
            return
        if clean_dataset is None:
            raise ValueError(
                f"loss_masking={mode!r} needs a clean_dataset (the small trusted set g_clean is computed on)."
            )
        if self.accelerator.distributed_type in UNSUPPORTED_ENGINES:
            raise NotImplementedError(
                f"loss_masking supports one process or DDP, not {self.accelerator.distributed_type.value}: the "
                "per-example JVP needs the full parameters on every rank."
            )
        module = self.accelerator.unwrap_model(self.model)
        loss_fn = per_example_loss if per_example_loss is not None else default_example_loss(module)
        self.loss_masker = LossMasker(
            MaskingConfig.from_args(self.args), self._clean_batch_stream(module, clean_dataset), loss_fn,
            prepare_batch=self._prepare_inputs,
        )
        self.loss_masker.bind(module)

    # --- clean data ----------------------------------------------------------------------------------------
    def _clean_batch_stream(self, module: nn.Module, clean_dataset: Any) -> CleanBatchStream:
        per_device = self.args.masking_clean_batch_size or self.args.per_device_train_batch_size
        world = max(1, self.args.world_size)
        seed = (self.args.data_seed if self.args.data_seed is not None else self.args.seed) + CLEAN_SEED_OFFSET
        if isinstance(module, MultiTaskModel):
            dataset, collate, index_batches = self._multitask_clean_data(module, clean_dataset, per_device * world,
                                                                          seed)
        else:
            dataset, collate, index_batches = self._generic_clean_data(clean_dataset, per_device * world, seed)
        return CleanBatchStream(dataset, collate, index_batches, rank=self.args.process_index, world_size=world)

    def _multitask_clean_data(
        self, module: MultiTaskModel, clean: Any, global_batch: int, seed: int
    ) -> tuple[Any, Callable, IndexBatches]:
        train = self.train_dataset
        tokenizer = self.processing_class
        if tokenizer is None:
            raise ValueError("Loss masking with a MultiTaskModel needs the tokenizer as `processing_class`.")
        if isinstance(clean, Mapping):
            if not isinstance(train, Mapping):
                raise ValueError("clean_dataset is {task: Dataset} (disjoint layout) but train_dataset is one "
                                 "shared-input Dataset; give both in the same layout.")
            if set(clean) != set(train):
                raise ValueError(
                    f"clean_dataset is for task(s) {sorted(clean)} but train_dataset for {sorted(train)}: the clean "
                    "set must label the same heads as the noisy one."
                )
            for name, dataset in clean.items():
                if len(dataset) == 0:
                    raise ValueError(f"clean_dataset: task {name!r} has no examples.")
            names = [n for n in module.task_names if n in clean]
            mixture = TaskMixture({n: clean[n] for n in names})
            sampler = MultiTaskBatchSampler(
                mixture.sizes, batch_size=min(global_batch, len(mixture)), strategy=self.args.sampling_strategy,
                temperature=self.args.sampling_temperature,
                max_examples_per_task=self.args.max_examples_per_task, seed=seed,
            )

            def index_batches(epoch: int):
                sampler.set_epoch(epoch)
                return iter(sampler)

            regression = frozenset(n for n in names if module.tasks[n].kind is TaskKind.REGRESSION)
            return mixture, MultiTaskCollator(tokenizer, names, regression), index_batches
        if isinstance(clean, datasets.Dataset):
            if not isinstance(train, datasets.Dataset):
                raise ValueError("clean_dataset is one shared-input Dataset but train_dataset is {task: Dataset}; "
                                 "give both in the same layout.")
            wanted = [f"label_{n}" for n in module.task_names]
            missing = [c for c in wanted if c not in clean.column_names]
            if missing:
                raise ValueError(
                    f"clean_dataset lacks label column(s) {missing} (it has {clean.column_names}): the clean set must "
                    "label the same heads as the noisy one."
                )
            self._check_clean_size(len(clean))
            collate = SharedInputCollator(tokenizer, list(module.tasks.values()))
            return clean, collate, shuffled_index_batches(len(clean), min(global_batch, len(clean)), seed)
        raise TypeError(f"clean_dataset must be {{task: Dataset}} or a Dataset, got {type(clean).__name__}.")

    def _generic_clean_data(self, clean: Any, global_batch: int, seed: int) -> tuple[Any, Callable, IndexBatches]:
        if isinstance(clean, Mapping):
            raise TypeError("clean_dataset must be one Dataset for this model (a {task: Dataset} mapping is for "
                            "MultiTaskModel).")
        if not hasattr(clean, "__len__") or not hasattr(clean, "__getitem__"):
            raise TypeError(f"clean_dataset must be an indexable dataset, got {type(clean).__name__}.")
        self._check_clean_size(len(clean))
        if isinstance(clean, datasets.Dataset):
            clean = self._remove_unused_columns(clean, description="clean")
            train = self.train_dataset
            if isinstance(train, datasets.Dataset):
                needed = set(self._remove_unused_columns(train, description="training").column_names)
                missing = sorted(needed - set(clean.column_names))
                if missing:
                    raise ValueError(
                        f"clean_dataset lacks column(s) {missing} that train_dataset has (clean: {clean.column_names}): "
                        "the clean and noisy sets must be for the same task."
                    )
        return clean, self.data_collator, shuffled_index_batches(len(clean), min(global_batch, len(clean)), seed)

    def _check_clean_size(self, size: int) -> None:
        if size == 0:
            raise ValueError("clean_dataset has no examples; loss masking needs a non-empty clean set.")
        if size < max(1, self.args.world_size):
            raise ValueError(f"clean_dataset has {size} example(s), fewer than the {self.args.world_size} processes.")

    def add_masking_observer(self, observer: Callable[[Mapping[str, Any], MaskRecord], None]) -> None:
        """Call ``observer(batch, record)`` after each masked micro-batch (example granularity)."""
        if self.loss_masker is None:
            raise ValueError("Loss masking is off (loss_masking='none'): there is nothing to observe.")
        self.loss_masker.observers.append(observer)

    # --- the step ---------------------------------------------------------------------------------------------
    def train(self, *args: Any, **kwargs: Any) -> Any:
        combiner = getattr(self, "combiner", None)
        if self.loss_masker is not None and combiner is not None and combiner.name != "linear":
            raise ValueError(
                f"loss_masking={self.args.loss_masking!r} replaces the gradient combination; it trains with the "
                f"task weights (combiner='linear'), not combiner {combiner.name!r}."
            )
        return super().train(*args, **kwargs)

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        if self.loss_masker is None:
            return super().training_step(model, inputs, num_items_in_batch)
        return self._masked_training_step(model, inputs)

    def _masking_grad_scale(self) -> float:
        """The GradScaler's current scale (1 without one); scaling a one also creates the scale on first use."""
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is None or not scaler.is_enabled():
            return 1.0
        return float(scaler.scale(torch.ones((), device=self.args.device)))

    def _masked_training_step(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """One micro-batch of the masking mode; the optimizer step's bookends run on its first and last."""
        masker = self.loss_masker
        model.train()
        inputs = self._prepare_inputs(inputs)
        module = self.accelerator.unwrap_model(model)
        grad_scale = self._masking_grad_scale()
        step = self.state.global_step
        if not self._masking_step_open:
            masker.begin_step(module, step, self.accelerator.autocast, grad_scale)
            self._masking_step_open = True
        accumulation = self.current_gradient_accumulation_steps
        loss = masker.micro_batch(module, inputs, grad_scale / accumulation, self.accelerator.autocast, step)
        if self.accelerator.sync_gradients:
            masker.end_step(step, grad_scale)
            self._masking_step_open = False
        return loss / accumulation

    # --- logging and checkpoints ------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.loss_masker is not None and "loss" in logs:
            logs.update(self.loss_masker.log_metrics())
        super().log(logs, start_time)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.loss_masker is not None and self.args.should_save:
            with open(os.path.join(output_dir, MASKING_STATE_NAME), "w", encoding="utf-8") as handle:
                json.dump(self.loss_masker.state_dict(), handle)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or self.loss_masker is None:
            return
        path = os.path.join(checkpoint, MASKING_STATE_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Checkpoint {checkpoint} has no {MASKING_STATE_NAME}; it was not saved with loss masking on, so the "
                "clean stream cannot resume where it stopped."
            )
        with open(path, encoding="utf-8") as handle:
            self.loss_masker.load_state_dict(json.load(handle))


class LossMaskingTrainer(LossMaskingMixin, Trainer):
    """A ``transformers.Trainer`` with the loss-masking mode, for any model with a per-example loss.

    Example (seq2seq)::

        args = LossMaskingTrainingArguments(output_dir="out", loss_masking="example", ...)
        trainer = LossMaskingTrainer(model=encoder_decoder, args=args, train_dataset=noisy,
                                     clean_dataset=clean, data_collator=collator)
    """
