"""hf_mtl: multi-task learning for HuggingFace Transformers.

A shared pretrained encoder with task heads (:class:`MultiTaskModel`; one :class:`TaskHead` class per
task kind, :func:`register_head` adds kinds), trained by a
``transformers.Trainer`` subclass (:class:`MultiTaskTrainer`) whose step combines per-task gradients
with a *combiner* (MGDA, primary/auxiliary, PCGrad, ...; see :mod:`hf_mtl.combiners`).

The names below are imported on first access (PEP 562 module ``__getattr__``), so ``import hf_mtl`` and the
``hf-mtl`` command line start without loading torch or transformers. Importing the model side
(``from hf_mtl import MultiTaskModel``, or any module that needs it) registers ``AutoConfig``/``AutoModel``
for ``model_type="hf_mtl"`` and the ``"multi-task"`` pipeline.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name → the module defining it
_EXPORTS = {
    "MultiTaskConfig": "hf_mtl.modeling",
    "MultiTaskModel": "hf_mtl.modeling",
    "MultiTaskModelOutput": "hf_mtl.modeling",
    "MultiTaskPipeline": "hf_mtl.inference",
    "MultiTaskTrainer": "hf_mtl.trainer",
    "MultiTaskTrainingArguments": "hf_mtl.training_args",
    "Task": "hf_mtl.tasks",
    "TaskHead": "hf_mtl.heads",
    "TaskKind": "hf_mtl.tasks",
    "TaskRole": "hf_mtl.tasks",
    "head_class": "hf_mtl.heads",
    "register_head": "hf_mtl.heads",
}

__all__ = [
    "MultiTaskConfig",
    "MultiTaskModel",
    "MultiTaskModelOutput",
    "MultiTaskPipeline",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "Task",
    "TaskHead",
    "TaskKind",
    "TaskRole",
    "head_class",
    "register_head",
]

if TYPE_CHECKING:
    from hf_mtl.heads import TaskHead, head_class, register_head
    from hf_mtl.inference import MultiTaskPipeline
    from hf_mtl.modeling import MultiTaskConfig, MultiTaskModel, MultiTaskModelOutput
    from hf_mtl.tasks import Task, TaskKind, TaskRole
    from hf_mtl.trainer import MultiTaskTrainer
    from hf_mtl.training_args import MultiTaskTrainingArguments


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hf_mtl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
