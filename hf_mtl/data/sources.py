"""Task data sources: embedded real corpora, GLUE by name, and user files, as ``datasets.Dataset`` splits.

Two layouts:

* :class:`TaskData` (disjoint): one dataset per task, columns ``text`` (``text_pair`` for pairs) and
  ``label`` — a GLUE-style mixture where every example is labelled for one task.
* :class:`SharedInputData` (shared input): one dataset whose every row is labelled for several tasks,
  one column ``label_<task>`` per task.

``load_task_data`` and ``load_preset`` build them; every split is validated on construction
(:func:`hf_mtl.data.validation.validate_task_dataset`). docs/data.md lists the embedded splits' sizes,
label distributions and majority-class baselines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from hf_mtl.data import embedded
from hf_mtl.data.convert import subsample
from hf_mtl.data.glue import GLUE_TASKS, load_glue
from hf_mtl.data.user_files import USER_FILE_KEYS, load_user_task
from hf_mtl.data.validation import LABEL_COLUMN, validate_task_dataset
from hf_mtl.tasks import Task, check_unique_names

__all__ = [
    "EMBEDDED_TASKS",
    "GLUE_TASKS",
    "SharedInputData",
    "TaskData",
    "available_presets",
    "available_tasks",
    "load_preset",
    "load_task_data",
    "majority_baseline",
    "shared_label_column",
    "validate_task_dataset",
]

EMBEDDED_TASKS: dict[str, Callable[[], embedded.EmbeddedSplits]] = {
    "rotten_tomatoes": embedded.load_rotten_tomatoes,
    "bible_paraphrase": embedded.load_bible_paraphrase,
    "debate_party": embedded.load_debate_party,
    "bible_translation": embedded.load_bible_translation,
}
#: The embedded classification tasks of the ``embedded_mixture`` preset.
EMBEDDED_MIXTURE = ("rotten_tomatoes", "bible_paraphrase", "debate_party")
#: Keys a dict spec may use to adjust a built-in (embedded or GLUE) task.
BUILTIN_OVERRIDE_KEYS = ("name", "role", "weight", "metrics")
GLUE_LOCAL_KEYS = ("data_dir", "data_files")


def shared_label_column(task: Task) -> str:
    """Name of a task's label column in the shared-input layout."""
    return f"label_{task.name}"


@dataclass
class TaskData:
    """One task and its own train/validation datasets (disjoint layout)."""

    task: Task
    train: datasets.Dataset
    validation: datasets.Dataset

    def __post_init__(self) -> None:
        if not isinstance(self.task, Task):
            raise ValueError(f"TaskData.task must be a Task, got {type(self.task).__name__}.")
        validate_task_dataset(self.task, self.train, "train")
        validate_task_dataset(self.task, self.validation, "validation")


@dataclass
class SharedInputData:
    """Several tasks labelling the same texts (shared-input layout): one ``label_<task>`` column per task."""

    tasks: list[Task]
    train: datasets.Dataset
    validation: datasets.Dataset

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("SharedInputData needs at least one task.")
        for task in self.tasks:
            if not isinstance(task, Task):
                raise ValueError(f"SharedInputData.tasks must hold Task objects, got {type(task).__name__}.")
        check_unique_names(self.tasks)
        for task in self.tasks:
            for split_name, dataset in (("train", self.train), ("validation", self.validation)):
                validate_task_dataset(task, dataset, split_name, label_column=shared_label_column(task))


def available_tasks() -> list[str]:
    """Names ``load_task_data`` accepts as a string: the embedded corpora, then the GLUE tasks."""
    return list(EMBEDDED_TASKS) + list(GLUE_TASKS)


def available_presets() -> list[str]:
    return list(_PRESETS)


def majority_baseline(dataset: datasets.Dataset, label_column: str = LABEL_COLUMN) -> float:
    """Accuracy of always predicting the most frequent class of ``dataset`` (classification labels only)."""
    if label_column not in dataset.column_names:
        raise ValueError(
            f"majority_baseline: no column {label_column!r}; columns present: {dataset.column_names}."
        )
    if dataset.num_rows == 0:
        raise ValueError("majority_baseline: the dataset has no rows.")
    labels = dataset.with_format("arrow")[label_column].to_numpy()
    if labels.dtype.kind not in "iu":
        raise ValueError(
            f"majority_baseline: column {label_column!r} holds {labels.dtype} values, not class ids "
            "(a regression target has no majority class)."
        )
    _, counts = np.unique(labels, return_counts=True)
    return float(counts.max() / labels.size)


def _dataset(frame: pd.DataFrame) -> datasets.Dataset:
    return datasets.Dataset.from_pandas(frame, preserve_index=False)


def _with_overrides(task: Task, overrides: dict[str, Any]) -> Task:
    return Task.from_dict({**task.to_dict(), **overrides}) if overrides else task


def _load_builtin(
    name: str,
    overrides: dict[str, Any],
    data_dir: str | Path | None,
    data_files: dict[str, Any] | None,
) -> tuple[Task, datasets.Dataset, datasets.Dataset]:
    if name in EMBEDDED_TASKS:
        if data_dir is not None or data_files is not None:
            raise ValueError(
                f"Task {name!r} is embedded (it ships in a package); data_dir/data_files apply to GLUE only."
            )
        splits = EMBEDDED_TASKS[name]()
        task, train, validation = splits.tasks[0], _dataset(splits.train), _dataset(splits.validation)
    else:
        task, train, validation = load_glue(name, data_dir=data_dir, data_files=data_files)
    return _with_overrides(task, overrides), train, validation


def load_task_data(
    spec: str | dict[str, Any],
    *,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 42,
    data_dir: str | Path | None = None,
    data_files: dict[str, str | list[str]] | None = None,
) -> TaskData:
    """Load one task in the disjoint layout.

    Args:
        spec: an embedded task name (``rotten_tomatoes``, ``bible_paraphrase``, ``debate_party``, or the
            seq2seq ``bible_translation``), a GLUE task name (``sst2``, ``mrpc``, ...), or a dict. A dict with ``train_file`` describes user files
            (keys :data:`~hf_mtl.data.user_files.USER_FILE_KEYS`); a dict without names a built-in task and
            may set its ``role``, ``weight``, ``metrics`` and, for GLUE, ``data_dir``/``data_files``.
        max_train_samples, max_eval_samples: keep a seeded random subset of at most this many rows.
        seed: seed of that subsampling only; the embedded train/validation splits are fixed.
        data_dir, data_files: local GLUE files (see :mod:`hf_mtl.data.glue`); without them GLUE
            tasks load from the Hugging Face Hub.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"A task spec is a task name or a dict, got {type(spec).__name__}: {spec!r}.")
    if "train_file" in spec:
        if data_dir is not None or data_files is not None:
            raise ValueError(
                f"Task {spec.get('name', '?')!r}: data_dir/data_files apply to GLUE tasks, not to user files."
            )
        task, train, validation = load_user_task(spec)
    else:
        name = spec.get("name")
        if name not in EMBEDDED_TASKS and name not in GLUE_TASKS:
            raise ValueError(
                f"Unknown task {name!r}; known tasks: {available_tasks()}. "
                "To read your own files, give a dict with 'train_file' and 'validation_file'."
            )
        allowed = BUILTIN_OVERRIDE_KEYS + (GLUE_LOCAL_KEYS if name in GLUE_TASKS else ())
        unknown = set(spec) - set(allowed)
        if unknown:
            raise ValueError(
                f"Task spec {name!r}: unknown keys {sorted(unknown)}; a built-in task accepts {list(allowed)} "
                f"(user files accept {list(USER_FILE_KEYS)})."
            )
        for key, value in (("data_dir", data_dir), ("data_files", data_files)):
            if key in spec and value is not None:
                raise ValueError(f"Task spec {name!r}: {key} given both in the spec and as an argument.")
        overrides = {key: spec[key] for key in ("role", "weight", "metrics") if key in spec}
        task, train, validation = _load_builtin(
            name, overrides, spec.get("data_dir", data_dir), spec.get("data_files", data_files)
        )
    return TaskData(
        task=task,
        train=subsample(train, max_train_samples, seed, "max_train_samples"),
        validation=subsample(validation, max_eval_samples, seed, "max_eval_samples"),
    )


def _embedded_mixture(
    max_train_samples: int | None, max_eval_samples: int | None, seed: int
) -> list[TaskData]:
    """Three disjoint real tasks: review polarity, verse paraphrase (pairs), debate party."""
    return [
        load_task_data(
            name, max_train_samples=max_train_samples, max_eval_samples=max_eval_samples, seed=seed
        )
        for name in EMBEDDED_MIXTURE
    ]


def _drug_reviews(max_train_samples: int | None, max_eval_samples: int | None, seed: int) -> SharedInputData:
    """Drug reviews labelled for rating (3 classes) and condition (10 classes) on the same text."""
    splits = embedded.load_drug_reviews()
    return SharedInputData(
        tasks=splits.tasks,
        train=subsample(_dataset(splits.train), max_train_samples, seed, "max_train_samples"),
        validation=subsample(_dataset(splits.validation), max_eval_samples, seed, "max_eval_samples"),
    )


def _qm9(max_train_samples: int | None, max_eval_samples: int | None, seed: int) -> SharedInputData:
    """QM9's 11 regression targets on a fixed subset, SMILES as text (:mod:`hf_mtl.data.qm9`, needs qm9pack)."""
    from hf_mtl.data.qm9 import qm9_splits

    tasks, train, validation, _ = qm9_splits()
    return SharedInputData(
        tasks=tasks,
        train=subsample(_dataset(train), max_train_samples, seed, "max_train_samples"),
        validation=subsample(_dataset(validation), max_eval_samples, seed, "max_eval_samples"),
    )


_PRESETS: dict[str, Callable[[int | None, int | None, int], list[TaskData] | SharedInputData]] = {
    "embedded_mixture": _embedded_mixture,
    "drug_reviews": _drug_reviews,
    "qm9": _qm9,
}


def load_preset(
    name: str,
    *,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 42,
) -> list[TaskData] | SharedInputData:
    """A ready-made multi-task data set: ``embedded_mixture`` (disjoint, 3 tasks), ``drug_reviews`` (shared
    input) or ``qm9`` (shared input, 11 regression targets; needs ``pip install --no-deps qm9pack``).

    ``max_train_samples``/``max_eval_samples`` cap each task's (or the shared dataset's) splits.
    """
    if name not in _PRESETS:
        raise ValueError(f"Unknown preset {name!r}; available presets: {available_presets()}.")
    return _PRESETS[name](max_train_samples, max_eval_samples, seed)
