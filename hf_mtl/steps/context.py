"""``StepContext``: what every step strategy needs from the Trainer, owned in one place.

Loss scale (``GradScaler``), micro-batch scale (``1 / gradient accumulation``), the reduction across ranks,
autocast and the non-finite policy live here once, so that no strategy re-derives them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch import nn

from hf_mtl.gradients import distributed

logger = logging.getLogger(__name__)

NONFINITE_POLICIES = ("skip_step", "drop_task", "raise")


@dataclass
class StepContext:
    """The Trainer's view the strategies share.

    Args:
        accelerator: the Trainer's ``Accelerator`` (sync flag, autocast, scaler, backward, unwrapping).
        task_names: task order of every ``(K,)`` vector and ``(K, K)`` matrix.
        nonfinite_policy: ``skip_step`` | ``drop_task`` | ``raise`` for a NaN/inf loss or gradient.
        global_step: returns the optimizer step being taken.
        accumulation: returns the number of micro-batches of the current optimizer step.
        task_weights: the tasks' static ``Task.weight`` (K,), for the loss the Trainer logs.
        record_task_gradients: keep the per-task gradient rows in the step record (``params`` mode).
        engine: ``"FSDP"`` / ``"DeepSpeed"`` when parameters are sharded, else ``None``.
        shard_task_gradients: ``params`` mode across ranks: reduce-scatter the per-task gradients and all-reduce
            only the K×K Gram (:class:`~hf_mtl.gradients.TaskGradientBuffer`), instead of all-reducing them whole;
            ``None``: on with NCCL, off with gloo.
        task_gradient_dtype: ``params`` mode: storage of the K×P per-task gradients, ``"float32"`` or
            ``"bfloat16"`` (half the memory; the Gram and the update are float32 either way).
    """

    accelerator: Accelerator
    task_names: list[str]
    nonfinite_policy: str
    global_step: Callable[[], int]
    accumulation: Callable[[], int]
    task_weights: torch.Tensor | None = None
    record_task_gradients: bool = False
    engine: str | None = None
    shard_task_gradients: bool | None = None
    task_gradient_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.nonfinite_policy not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite_policy must be one of {NONFINITE_POLICIES}, got {self.nonfinite_policy!r}.")

    # --- the micro-batch within the optimizer step ---------------------------------------------------------
    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def step(self) -> int:
        return self.global_step()

    @property
    def is_last_micro_batch(self) -> bool:
        """True on the micro-batch after which the optimizer steps."""
        return bool(self.accelerator.sync_gradients)

    @property
    def micro_batch_scale(self) -> float:
        """``1 / micro-batches``: each micro-batch's share of the step's mean loss."""
        return 1.0 / max(1, self.accumulation())

    def reported_loss(self, losses: torch.Tensor) -> torch.Tensor:
        """The loss the Trainer logs for a micro-batch: ``Σ_k Task.weight_k · L_k`` over the micro-batches."""
        weights = (self.task_weights if self.task_weights is not None else torch.ones(self.num_tasks))
        losses = losses.detach()
        return (weights.to(losses.device, losses.dtype) * losses).sum() * self.micro_batch_scale

    # --- scales and devices -----------------------------------------------------------------------------
    def grad_scale(self) -> float:
        """The ``GradScaler``'s current loss scale (1 without one); creates the scale on first use."""
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is None or not scaler.is_enabled():
            return 1.0
        return float(scaler.scale(torch.ones((), device=self.accelerator.device)))

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision autocast for computations that bypass the wrapped model's ``forward``."""
        return self.accelerator.autocast()

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model)

    def backward(self, loss: torch.Tensor) -> None:
        """A plain backward through the (possibly DDP/FSDP-wrapped) model, loss scaling included."""
        self.accelerator.backward(loss)

    @contextlib.contextmanager
    def no_sync(self, model: nn.Module) -> Iterator[None]:
        """Backward passes inside accumulate locally (no cross-rank reduction)."""
        with self.accelerator.no_sync(model):
            yield

    # --- across ranks ----------------------------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return dist.get_world_size() if distributed() else 1

    def sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (identity in one process); returns a new tensor on ``tensor``'s device."""
        out = tensor.clone()
        if distributed():
            device = self.accelerator.device
            moved = out.to(device)
            dist.all_reduce(moved, op=dist.ReduceOp.SUM)
            out = moved.to(tensor.device)
        return out

    def mean_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.sum_over_ranks(tensor) / self.world_size

    def any_over_ranks(self, flag: bool) -> bool:
        """True when ``flag`` is true on any rank (every rank gets the same answer)."""
        value = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
        return bool(self.sum_over_ranks(value)[0] > 0)

    # --- non-finite values -----------------------------------------------------------------------------
    def nonfinite(self, bad_tasks: list[str]) -> str:
        """Apply ``nonfinite_policy`` to tasks with a NaN/inf loss or gradient; returns the policy.

        Raises:
            FloatingPointError: under ``nonfinite_policy='raise'``, naming the step and the tasks.
        """
        message = (f"Step {self.step}: non-finite loss or gradient for task(s) {bad_tasks} "
                   f"(nonfinite_policy={self.nonfinite_policy!r}).")
        if self.nonfinite_policy == "raise":
            raise FloatingPointError(message)
        logger.warning(message)
        return self.nonfinite_policy
