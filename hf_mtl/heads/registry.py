"""The registry of task heads: ``Task.kind`` value → :class:`~hf_mtl.heads.base.TaskHead` subclass."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from hf_mtl.heads.base import TaskHead

HeadType = TypeVar("HeadType", bound="type[TaskHead]")

_HEADS: dict[str, type[TaskHead]] = {}


def register_head(kind: str) -> Callable[[HeadType], HeadType]:
    """Class decorator: make ``cls`` the head of tasks of ``kind`` (a new kind, or a replacement)."""

    def decorate(cls: HeadType) -> HeadType:
        cls.kind = str(getattr(kind, "value", kind))
        _HEADS[cls.kind] = cls
        return cls

    return decorate


def registered_kinds() -> list[str]:
    """Every task kind with a head."""
    return list(_HEADS)


def head_class(kind: str) -> type[TaskHead]:
    """The head class of ``kind`` (a ``TaskKind`` or its string value)."""
    key = str(getattr(kind, "value", kind))
    if key not in _HEADS:
        raise ValueError(f"No task head is registered for kind {key!r}; registered kinds: {registered_kinds()}.")
    return _HEADS[key]
