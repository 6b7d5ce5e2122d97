"""The step contract: one optimizer step = micro-batches in, one update in ``.grad``, one :class:`StepRecord` out.

A strategy implements

* ``micro_batch(model, inputs) -> loss`` — called once per micro-batch (gradient accumulation); returns the
  detached loss the Trainer logs (already divided by the number of micro-batches);
* ``end_step() -> StepRecord`` — called after the step's last micro-batch; leaves the update in ``.grad`` (or
  marks the step skipped) and calls the combiner exactly once.

Shared parts (loss scale, micro-batch scale, cross-rank reduction, autocast, the non-finite policy) come from
:class:`~hf_mtl.steps.context.StepContext`; :func:`solve_weights` is the one place a combiner is called.
A new way of producing the update is one new module with a class registered by :func:`register_step_strategy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from hf_mtl.combiners import Combiner
from hf_mtl.gradients import profiled
from hf_mtl.steps.context import StepContext
from hf_mtl.steps.record import StepRecord


class StepStrategy:
    """Base class of the step strategies (see the module docstring for the contract).

    Args:
        context: the Trainer's :class:`StepContext`.
        module: the unwrapped model.
        combiner: the combiner that turns the step's Gram matrix / losses into task weights.
    """

    name: ClassVar[str] = ""
    #: File (inside a checkpoint folder) holding :meth:`state_dict`; ``None`` when the strategy keeps no state.
    state_file: ClassVar[str | None] = None

    def __init__(self, context: StepContext, module: nn.Module, combiner: Combiner | None) -> None:
        self.context = context
        self.module = module
        self.combiner = combiner

    def micro_batch(self, model: nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def end_step(self) -> StepRecord:
        raise NotImplementedError

    def log_metrics(self) -> dict[str, float]:
        """Strategy-specific figures averaged since the last call (then reset)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` from a checkpoint."""

    def new_record(self) -> StepRecord:
        return StepRecord(step=self.context.step)


_STRATEGIES: dict[str, type[StepStrategy]] = {}


def register_step_strategy(cls: type[StepStrategy]) -> type[StepStrategy]:
    """Class decorator: make ``cls`` available as ``step_strategy=cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name` to be registered.")
    _STRATEGIES[cls.name] = cls
    return cls


def available_step_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def get_step_strategy(name: str) -> type[StepStrategy]:
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise ValueError(f"Unknown step strategy {name!r}; available: {', '.join(available_step_strategies())}.") from None


def ordered_losses(task_losses: Mapping[str, torch.Tensor], context: StepContext) -> torch.Tensor:
    """The ``(K,)`` vector of task losses in the trainer's task order (every task must be present)."""
    missing = [n for n in context.task_names if n not in task_losses]
    if missing:
        raise ValueError(
            f"Step {context.step}: task(s) {missing} have no sub-batch in this batch; every step must see every task "
            "(raise per_device_train_batch_size or check the sampler)."
        )
    return torch.stack([task_losses[n] for n in context.task_names])


@profiled("hf_mtl::combiner")
def solve_weights(
    combiner: Combiner, context: StepContext, record: StepRecord, losses: torch.Tensor,
    gram: torch.Tensor | None = None, present: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """The step's one combiner call: weights ``(K,)`` float64, or ``None`` when the step must be skipped.

    Tasks with a non-finite loss (or Gram diagonal) follow ``nonfinite_policy``: ``raise``; ``skip_step``;
    ``drop_task`` (solved without them; stateful combiners, whose state assumes every task, skip instead).
    Tasks absent from the step or with a zero gradient get weight 0 (the combiner sees the sub-problem of the
    others; a stateful one sees the full Gram with those rows zeroed). ``record`` gets the weights, the Gram,
    the losses, the combiner's diagnostics, and the reason of a skip.
    """
    num_tasks = context.num_tasks
    losses = losses.detach().double().cpu()
    present = torch.ones(num_tasks, dtype=torch.bool) if present is None else present.bool().cpu()
    record.losses = losses
    finite = torch.isfinite(losses)
    if gram is not None:
        gram = gram.detach().double().cpu()
        record.gram = gram
        diag = gram.diagonal()
        finite = finite & torch.isfinite(diag)
        active = present & finite & (diag > 0)
    else:
        active = present & finite
    bad = [context.task_names[i] for i in range(num_tasks) if bool(present[i]) and not bool(finite[i])]
    if bad:
        record.nonfinite_tasks = bad
        if context.nonfinite(bad) == "skip_step" or combiner.stateful:
            record.skip(f"non-finite loss or gradient for task(s) {bad}")
            return None
    index = torch.nonzero(active).flatten()
    if len(index) == 0:
        record.skip("no task has a non-zero finite gradient")
        return None
    if combiner.stateful and len(index) < num_tasks:
        mask = active.double()
        full_gram = None if gram is None else gram.nan_to_num() * mask[:, None] * mask[None, :]
        solved = combiner(full_gram, losses=torch.where(active, losses, torch.zeros_like(losses)))
        solved = solved.double().cpu()[index]
    else:
        sub_problem = combiner if len(index) == num_tasks else combiner.restricted(index.tolist())
        if sub_problem is None:
            record.skip("no main task has a usable gradient")
            return None
        sub_gram = None if gram is None else gram[index][:, index]
        solved = sub_problem(sub_gram, losses=losses[index]).double().cpu()
    if not torch.isfinite(solved).all():
        raise FloatingPointError(
            f"Step {context.step}: combiner {combiner.name!r} returned non-finite weights {solved.tolist()} for tasks "
            f"{[context.task_names[i] for i in index.tolist()]}."
        )
    weights = torch.zeros(num_tasks, dtype=torch.float64)
    weights[index] = solved
    record.weights = weights
    record.combiner_info = dict(combiner.last_info)
    return weights


def zero_gradients(module: nn.Module) -> None:
    """No parameter moves this step: optimizers skip parameters whose ``.grad`` is ``None``."""
    for param in module.parameters():
        param.grad = None
