"""Loss masking inside a ``transformers.Trainer``: :func:`build_loss_masker` and :class:`LossMaskingTrainer`.

The masking step is a step strategy (:class:`~hf_mtl.steps.MaskingStep`) so that one code path trains any model
with a per-example loss (:mod:`hf_mtl.masking.per_example`): ``MultiTaskModel`` heads (``MultiTaskTrainer``
with ``loss_masking='example'|'batch'``), an ``EncoderDecoderModel`` or any seq2seq / sequence-classification
model (``LossMaskingTrainer``). The Trainer supplies the batches, the accumulation window, autocast, the
gradient scaler and the process group; :class:`~hf_mtl.masking.masker.LossMasker` does the rest.

Supported engines: one process, or DDP (``torchrun`` / ``accelerate launch``, gloo or NCCL). The JVP and
the gradients are taken on the unwrapped module and averaged over ranks in one all-reduce per step, so the
DDP wrapper's own backward hooks never fire. FSDP, DeepSpeed and XLA are rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import datasets
from accelerate.utils import DistributedType
from torch import nn

from hf_mtl.data.mixture import MultiTaskBatchSampler, MultiTaskCollator, SharedInputCollator, TaskMixture
from hf_mtl.masking.clean_data import CleanBatchStream, IndexBatches, shuffled_index_batches
from hf_mtl.masking.masker import LossMasker, MaskingConfig
from hf_mtl.masking.per_example import PerExampleLoss, default_example_loss
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.steps.masking import MASKING_STATE_NAME, MaskingStep
from hf_mtl.steps.trainer import StepTrainer

#: Mixed into the seed of the clean stream so that it never mirrors the training order.
CLEAN_SEED_OFFSET = 7919
UNSUPPORTED_ENGINES = (DistributedType.DEEPSPEED, DistributedType.FSDP, DistributedType.XLA,
                       DistributedType.MEGATRON_LM)

__all__ = ["CLEAN_SEED_OFFSET", "MASKING_STATE_NAME", "LossMaskingTrainer", "build_loss_masker"]


def build_loss_masker(trainer: StepTrainer, module: nn.Module, clean_dataset: Any,
                      per_example_loss: PerExampleLoss | None = None) -> LossMasker | None:
    """The :class:`LossMasker` for ``trainer.args.loss_masking`` (``None`` when masking is off).

    ``trainer`` is the :class:`~hf_mtl.steps.trainer.StepTrainer` being built (its arguments, training set,
    tokenizer, collator, accelerator, ``prepare_inputs`` and ``drop_unused_columns`` are used); ``clean_dataset`` is the small trusted set, in the training set's layout.
    """
    args = trainer.args
    mode = getattr(args, "loss_masking", None)
    if mode is None:
        if clean_dataset is not None:
            raise ValueError(
                f"clean_dataset was given but {type(args).__name__} has no loss-masking fields; use "
                "LossMaskingTrainingArguments (or MultiTaskTrainingArguments) with loss_masking='example'/'batch'."
            )
        return None
    if mode == "none":
        if clean_dataset is not None:
            raise ValueError(
                "clean_dataset was given but loss_masking='none'; set loss_masking='example' or 'batch' to use it."
            )
        return None
    if clean_dataset is None:
        raise ValueError(f"loss_masking={mode!r} needs a clean_dataset (the small trusted set g_clean is computed on).")
    if trainer.accelerator.distributed_type in UNSUPPORTED_ENGINES:
        raise NotImplementedError(
            f"loss_masking supports one process or DDP, not {trainer.accelerator.distributed_type.value}: the "
            "per-example JVP needs the full parameters on every rank."
        )
    loss_fn = per_example_loss if per_example_loss is not None else default_example_loss(module)
    masker = LossMasker(MaskingConfig.from_args(args), _CleanData(trainer).stream(module, clean_dataset), loss_fn,
                        prepare_batch=trainer.prepare_inputs)
    masker.bind(module)
    return masker


class _CleanData:
    """Builds this rank's stream of clean batches in the training set's layout."""

    def __init__(self, trainer: StepTrainer) -> None:
        self.trainer = trainer
        self.args = trainer.args

    def stream(self, module: nn.Module, clean_dataset: Any) -> CleanBatchStream:
        args = self.args
        per_device = args.masking_clean_batch_size or args.per_device_train_batch_size
        world = max(1, args.world_size)
        seed = (args.data_seed if args.data_seed is not None else args.seed) + CLEAN_SEED_OFFSET
        if isinstance(module, MultiTaskModel):
            dataset, collate, index_batches = self._multitask(module, clean_dataset, per_device * world, seed)
        else:
            dataset, collate, index_batches = self._generic(clean_dataset, per_device * world, seed)
        return CleanBatchStream(dataset, collate, index_batches, rank=args.process_index, world_size=world)

    def _multitask(
        self, module: MultiTaskModel, clean: Any, global_batch: int, seed: int
    ) -> tuple[Any, Callable, IndexBatches]:
        train = self.trainer.train_dataset
        tokenizer = self.trainer.processing_class
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

            return mixture, MultiTaskCollator(tokenizer, [module.tasks[n] for n in names]), index_batches
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

    def _generic(self, clean: Any, global_batch: int, seed: int) -> tuple[Any, Callable, IndexBatches]:
        if isinstance(clean, Mapping):
            raise TypeError("clean_dataset must be one Dataset for this model (a {task: Dataset} mapping is for "
                            "MultiTaskModel).")
        if not hasattr(clean, "__len__") or not hasattr(clean, "__getitem__"):
            raise TypeError(f"clean_dataset must be an indexable dataset, got {type(clean).__name__}.")
        self._check_clean_size(len(clean))
        if isinstance(clean, datasets.Dataset):
            clean = self.trainer.drop_unused_columns(clean, "clean")
            train = self.trainer.train_dataset
            if isinstance(train, datasets.Dataset):
                needed = set(self.trainer.drop_unused_columns(train, "training").column_names)
                missing = sorted(needed - set(clean.column_names))
                if missing:
                    raise ValueError(
                        f"clean_dataset lacks column(s) {missing} that train_dataset has (clean: {clean.column_names}): "
                        "the clean and noisy sets must be for the same task."
                    )
        return clean, self.trainer.data_collator, shuffled_index_batches(len(clean), min(global_batch, len(clean)), seed)

    def _check_clean_size(self, size: int) -> None:
        if size == 0:
            raise ValueError("clean_dataset has no examples; loss masking needs a non-empty clean set.")
        if size < max(1, self.args.world_size):
            raise ValueError(f"clean_dataset has {size} example(s), fewer than the {self.args.world_size} processes.")


class LossMaskingTrainer(StepTrainer):
    """A ``transformers.Trainer`` with the loss-masking mode, for any model with a per-example loss.

    Keyword arguments (on top of the Trainer's):
        clean_dataset: the small trusted set, in the same layout and for the same task as ``train_dataset``.
        per_example_loss: ``fn(module, batch) -> ExampleLosses``; by default chosen from the model
            (:func:`~hf_mtl.masking.per_example.default_example_loss`).

    The arguments need the ``masking_*`` fields (:class:`~hf_mtl.masking.LossMaskingTrainingArguments`). The
    ``loss`` logged is the plain (unmasked) noisy loss, comparable with an unmasked run; the masked fraction (or,
    in ``batch`` mode, ``λ``) is logged next to it.

    Example (seq2seq)::

        args = LossMaskingTrainingArguments(output_dir="out", loss_masking="example", ...)
        trainer = LossMaskingTrainer(model=encoder_decoder, args=args, train_dataset=noisy,
                                     clean_dataset=clean, data_collator=collator)
    """

    def __init__(self, *args: Any, clean_dataset: Any = None, per_example_loss: PerExampleLoss | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        module = self.accelerator.unwrap_model(self.model)
        self.loss_masker = build_loss_masker(self, module, clean_dataset, per_example_loss)
        if self.loss_masker is not None:  # loss_masking='none' trains like a plain Trainer
            self.step_strategy = MaskingStep(self.step_context([]), module, None, masker=self.loss_masker)
