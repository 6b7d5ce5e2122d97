"""Source splits → tokenised datasets in the layout :class:`~hf_mtl.MultiTaskTrainer` takes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
from transformers import PreTrainedTokenizerBase

from hf_mtl.data.mixture import tokenize_shared_dataset, tokenize_task_dataset
from hf_mtl.data.sources import SharedInputData, TaskData
from hf_mtl.tasks import Task, check_unique_names


@dataclass
class PreparedData:
    """Tasks and tokenised splits: ``{task: Dataset}`` (disjoint) or one ``Dataset`` (shared input)."""

    tasks: list[Task]
    train: dict[str, datasets.Dataset] | datasets.Dataset
    validation: dict[str, datasets.Dataset] | datasets.Dataset

    @property
    def is_shared_input(self) -> bool:
        return isinstance(self.train, datasets.Dataset)


def prepare_datasets(
    source: Sequence[TaskData] | SharedInputData, tokenizer: PreTrainedTokenizerBase, max_length: int = 128
) -> PreparedData:
    """Tokenise a disjoint mixture (a list of :class:`TaskData`) or a :class:`SharedInputData`."""
    if isinstance(source, SharedInputData):
        return PreparedData(
            tasks=list(source.tasks),
            train=tokenize_shared_dataset(source.tasks, source.train, tokenizer, max_length),
            validation=tokenize_shared_dataset(source.tasks, source.validation, tokenizer, max_length),
        )
    items = list(source)
    if not items:
        raise ValueError("prepare_datasets: no task data given.")
    tasks = [item.task for item in items]
    check_unique_names(tasks)
    return PreparedData(
        tasks=tasks,
        train={i.task.name: tokenize_task_dataset(i.task, i.train, tokenizer, max_length) for i in items},
        validation={i.task.name: tokenize_task_dataset(i.task, i.validation, tokenizer, max_length) for i in items},
    )
