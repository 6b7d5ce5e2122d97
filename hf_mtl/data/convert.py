"""Mapping a dataset with arbitrary column names onto the contract columns ``text``/``text_pair``/``label``."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa

from hf_mtl.data.validation import (
    LABEL_COLUMN,
    TEXT_COLUMN,
    TEXT_PAIR_COLUMN,
    validate_task_dataset,
)
from hf_mtl.tasks import Task


def is_string_column(dataset: datasets.Dataset, column: str) -> bool:
    arrow_type = dataset.data.schema.field(column).type
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def check_columns_present(
    task_name: str, split_name: str, dataset: datasets.Dataset, columns: list[str]
) -> None:
    present = list(dataset.column_names)
    for column in columns:
        if column not in present:
            raise ValueError(
                f"Task {task_name!r}, split {split_name!r}: missing column {column!r}; columns present: {present}."
            )


def map_label_names(
    task_name: str, split_name: str, column: str, values: list, label_names: list[str]
) -> np.ndarray:
    """Class ids of string labels; an unknown (or missing) name raises, naming value, row and known names."""
    index = {name: i for i, name in enumerate(label_names)}
    ids = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        if value not in index:
            raise ValueError(
                f"Task {task_name!r}, split {split_name!r}, column {column!r}: unknown label {value!r} at row {row}; "
                f"label_names are {label_names}."
            )
        ids[row] = index[value]
    return ids


def to_contract_columns(
    task: Task,
    dataset: datasets.Dataset,
    split_name: str,
    *,
    text_column: str,
    label_column: str,
    text_pair_column: str | None = None,
) -> datasets.Dataset:
    """Keep the task's text and label columns, renamed to the contract names, with labels as class ids.

    ``text_pair_column`` is kept whenever given: sentence-pair classification needs it, and a
    regression task may score a pair too (STS-B).

    String labels of a sentence classification task are mapped through ``task.label_names``; the label
    column is cast to the head's ``label_dtype`` (class ids int64, regression targets float32). The result
    is validated.
    """
    head = task.head_class()
    if head.requires_pair and text_pair_column is None:
        raise ValueError(f"Task {task.name!r} is a sentence-pair task: give the column of the second text.")
    has_pair = text_pair_column is not None
    sources = [text_column] + ([text_pair_column] if has_pair else []) + [label_column]
    check_columns_present(task.name, split_name, dataset, sources)
    targets = [TEXT_COLUMN] + ([TEXT_PAIR_COLUMN] if has_pair else []) + [LABEL_COLUMN]
    table = pa.table(
        {
            target: dataset.with_format("arrow")[source]
            for source, target in zip(sources, targets, strict=True)
        }
    )
    converted = datasets.Dataset(table)
    if head.has_classes and head.label_dtype is not None and is_string_column(converted, LABEL_COLUMN):
        if not task.label_names:
            raise ValueError(
                f"Task {task.name!r}, split {split_name!r}, column {label_column!r}: labels are strings "
                f"(e.g. {converted[LABEL_COLUMN][0]!r}) but the task has no label_names to map them to class ids."
            )
        ids = map_label_names(
            task.name,
            split_name,
            label_column,
            converted.with_format("arrow")[LABEL_COLUMN].to_pylist(),
            task.label_names,
        )
        converted = converted.remove_columns(LABEL_COLUMN).add_column(LABEL_COLUMN, ids.tolist())
    validate_task_dataset(task, converted, split_name)
    if head.label_dtype is not None:
        converted = converted.cast_column(LABEL_COLUMN, datasets.Value(head.label_dtype))
    return converted


def subsample(dataset: datasets.Dataset, max_samples: int | None, seed: int, what: str) -> datasets.Dataset:
    """A seeded random subset of at most ``max_samples`` rows (the same rows on every machine)."""
    if max_samples is None:
        return dataset
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ValueError(f"{what} must be a positive integer or None, got {max_samples!r}.")
    if max_samples >= dataset.num_rows:
        return dataset
    rows = np.sort(np.random.default_rng(seed).permutation(dataset.num_rows)[:max_samples])
    return dataset.select(rows.tolist())
