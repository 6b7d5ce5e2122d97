"""Task descriptions: what a head predicts, how it is scored and what role it plays in training."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


class TaskKind(str, enum.Enum):
    """What a task head predicts."""

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


_DEFAULT_METRICS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.SINGLE_SENTENCE_CLASSIFICATION: ("accuracy", "macro_f1"),
    TaskKind.SENTENCE_PAIR_CLASSIFICATION: ("accuracy", "macro_f1"),
    TaskKind.REGRESSION: ("pearson", "spearmanr"),
    TaskKind.TOKEN_CLASSIFICATION: ("accuracy",),
    TaskKind.SEQ2SEQ: ("sacrebleu",),
}

_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass
class Task:
    """One task of a multi-task model.

    Args:
        name: identifier used as the head's key, in logs (``eval_<name>_<metric>``) and in batches.
        kind: a :class:`TaskKind` or its string value.
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
        try:
            self.kind = TaskKind(self.kind)
        except ValueError:
            raise ValueError(
                f"Task {self.name!r}: unknown kind {self.kind!r}; expected one of {[k.value for k in TaskKind]}."
            ) from None
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
        if self.kind is TaskKind.REGRESSION:
            if self.num_labels not in (None, 1):
                raise ValueError(f"Task {self.name!r}: a regression task has num_labels=1, got {self.num_labels}.")
            self.num_labels = 1
        elif self.kind is not TaskKind.SEQ2SEQ:
            if self.num_labels is None or int(self.num_labels) < 2:
                raise ValueError(
                    f"Task {self.name!r}: a {self.kind.value} task needs num_labels >= 2 (or label_names), "
                    f"got {self.num_labels}."
                )
            self.num_labels = int(self.num_labels)
        if not self.metrics:
            self.metrics = list(_DEFAULT_METRICS[self.kind])
        self.metrics = list(self.metrics)
        self.weight = float(self.weight)

    @property
    def is_main(self) -> bool:
        return self.role is TaskRole.MAIN

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
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
