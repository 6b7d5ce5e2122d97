"""hf_mtl: multi-task learning for HuggingFace Transformers.

A shared pretrained encoder with task heads (:class:`MultiTaskModel`; one :class:`TaskHead` class per
task kind, :func:`register_head` adds kinds), trained by a
``transformers.Trainer`` subclass (:class:`MultiTaskTrainer`) whose step combines per-task gradients
with a *combiner* (MGDA, primary/auxiliary, PCGrad, ...; see :mod:`hf_mtl.combiners`).
"""

from hf_mtl.heads import TaskHead, head_class, register_head
from hf_mtl.modeling import MultiTaskConfig, MultiTaskModel, MultiTaskModelOutput
from hf_mtl.tasks import Task, TaskKind, TaskRole
from hf_mtl.trainer import MultiTaskTrainer
from hf_mtl.training_args import MultiTaskTrainingArguments

__version__ = "0.1.0"

__all__ = [
    "MultiTaskConfig",
    "MultiTaskModel",
    "MultiTaskModelOutput",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "Task",
    "TaskHead",
    "TaskKind",
    "TaskRole",
    "head_class",
    "register_head",
]
