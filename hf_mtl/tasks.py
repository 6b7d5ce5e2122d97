"""Task descriptions: what a head predicts, how it is scored and what role it plays in training."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hf_mtl.heads import TaskHead


class TaskKind(str, enum.Enum):
    """What a task head predicts: the built-in kinds (:mod:`hf_mtl.heads` registers one head class each;
    ``register_head`` adds more, whose ``Task.kind`` stays a plain string)."""

    SINGLE_SENTENCE_CLASSIFICATION = "single_sentence_classification"
    SENTENCE_PAIR_CLASSIFICATION = "sentence_pair_classification"
    REGRESSION = "regression"
    TOKEN_CLASSIFICATION = "token_classification"
    SEQ2SEQ = "seq2seq"

    @property
    def is_classification(self) -> bool:
        return self in (
            TaskKind.SINGLE_SENTENCE_CLASSIFICATION,
            TaskKind.SENTENCE_PAIR_CLASSIFICATION,
            TaskKind.TOKEN_CLASSIFICATION,
        )

    @property
    def is_pair(self) -> bool:
        return self is TaskKind.SENTENCE_PAIR_CLASSIFICATION


class TaskRole(str, enum.Enum):
    """`main` tasks are optimised; `auxiliary` tasks must only not get worse (primary/auxiliary combiners)."""

    MAIN = "main"
    AUXILIARY = "auxiliary"


_BUILTIN_KINDS = {kind.value for kind in TaskKind}
_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass
class Task:
    """One task of a multi-task model.

    Args:
        name: identifier used as the head's key, in logs (``eval_<name>_<metric>``) and in batches.
        kind: a :class:`TaskKind`, its string value, or a kind registered with ``hf_mtl.heads.register_head``.
        num_labels: number of classes (1 for regression). Inferred from ``label_names`` when omitted.
        label_names: human-readable class names, index ``i`` naming label ``i``.
        metrics: metric names (offline ones from :mod:`hf_mtl.metrics`, or any ``evaluate`` name online).
            The first is the task's headline metric, averaged across tasks in ``eval_average``.
        role: ``main`` or ``auxiliary``; read by the primary/auxiliary combiner.
        weight: static loss weight used by the ``linear`` combiner.
    """

    name: str
    kind: TaskKind | str = TaskKind.SINGLE_SENTENCE_CLASSIFICATION
    num_labels: int | None = None
    label_names: list[str] | None = None
    metrics: list[str] = field(default_factory=list)
    role: TaskRole | str = TaskRole.MAIN
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise ValueError(
                f"Task name {self.name!r} is not a valid identifier: use letters, digits and underscores, "
                "starting with a letter."
            )
        head = self.head_class()
        self.kind = TaskKind(head.kind) if head.kind in _BUILTIN_KINDS else head.kind
        try:
            self.role = TaskRole(self.role)
        except ValueError:
            raise ValueError(
                f"Task {self.name!r}: unknown role {self.role!r}; expected 'main' or 'auxiliary'."
            ) from None
        if self.label_names is not None:
            self.label_names = [str(n) for n in self.label_names]
            if self.num_labels is None:
                self.num_labels = len(self.label_names)
            elif self.num_labels != len(self.label_names):
                raise ValueError(
                    f"Task {self.name!r}: num_labels={self.num_labels} but {len(self.label_names)} label_names given."
                )
        head.check_task(self)
        if not self.metrics:
            self.metrics = list(head.default_metrics)
        self.metrics = list(self.metrics)
        self.weight = float(self.weight)

    @property
    def is_main(self) -> bool:
        return self.role is TaskRole.MAIN

    @property
    def kind_name(self) -> str:
        """The kind as a plain string."""
        return str(getattr(self.kind, "value", self.kind))

    def head_class(self) -> type[TaskHead]:
        """The :class:`~hf_mtl.heads.TaskHead` subclass registered for this task's kind."""
        from hf_mtl.heads import head_class, registered_kinds  # the heads import this module

        try:
            return head_class(self.kind)
        except ValueError:
            raise ValueError(
                f"Task {self.name!r}: unknown kind {self.kind_name!r}; expected one of {registered_kinds()}."
            ) from None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind_name
        data["role"] = self.role.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(
                f"Task {data.get('name', '?')!r}: unknown keys {sorted(unknown)}; "
                f"allowed: {sorted(cls.__dataclass_fields__)}."
            )
        return cls(**data)


def check_unique_names(tasks: Sequence[Task]) -> None:
    """Raise if two tasks share a name."""
    seen: set[str] = set()
    for task in tasks:
        if task.name in seen:
            raise ValueError(f"Task name {task.name!r} is used twice; task names must be unique.")
        seen.add(task.name)
