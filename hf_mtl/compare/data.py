"""The mixture of a comparison and its one-task restrictions (the single-task baselines' data)."""

from __future__ import annotations

from typing import Any

from hf_mtl.data.sources import SharedInputData, TaskData, load_preset, load_task_data, shared_label_column
from hf_mtl.tasks import Task

Source = list[TaskData] | SharedInputData


def load_source(preset: str | None, tasks: list[Any] | None, *, max_train_samples: int | None = None,
                max_eval_samples: int | None = None, seed: int = 42) -> Source:
    """A preset (``load_preset``) or a list of task specs (``load_task_data``), capped to a fixed subset."""
    caps = {"max_train_samples": max_train_samples, "max_eval_samples": max_eval_samples, "seed": seed}
    if tasks:
        return [load_task_data(spec, **caps) for spec in tasks]
    return load_preset(preset or "embedded_mixture", **caps)


def source_tasks(source: Source) -> list[Task]:
    return list(source.tasks) if isinstance(source, SharedInputData) else [item.task for item in source]


def restrict_source(source: Source, names: tuple[str, ...] | None) -> Source:
    """The same data with only the tasks ``names`` (all of them for ``None``)."""
    if names is None:
        return source
    unknown = set(names) - {task.name for task in source_tasks(source)}
    if unknown:
        raise ValueError(f"Tasks {sorted(unknown)} are not in the mixture {[t.name for t in source_tasks(source)]}.")
    if isinstance(source, SharedInputData):
        keep = [task for task in source.tasks if task.name in names]
        drop = [shared_label_column(t) for t in source.tasks if t.name not in names]
        return SharedInputData(tasks=keep, train=source.train.remove_columns(drop),
                               validation=source.validation.remove_columns(drop))
    return [item for item in source if item.task.name in names]
