"""Checks that a task's dataset has the columns and label values its head expects.

Every loader in :mod:`hf_mtl.data.sources` runs these checks on each split, so that bad data fails at
load time with a message naming the task, split, column, offending value and row, instead of as a CUDA
assert or a silent NaN loss deep inside training.
"""

from __future__ import annotations

import datasets
import pyarrow as pa

from hf_mtl.heads.checks import check_texts
from hf_mtl.tasks import Task

TEXT_COLUMN = "text"
TEXT_PAIR_COLUMN = "text_pair"
LABEL_COLUMN = "label"


def _where(task: Task, split_name: str) -> str:
    return f"Task {task.name!r}, split {split_name!r}"


def validate_task_dataset(
    task: Task, dataset: datasets.Dataset, split_name: str, *, label_column: str = LABEL_COLUMN
) -> None:
    """Raise a ``ValueError`` unless ``dataset`` is a usable split of ``task``.

    Checks: at least one row; the text column(s) of the task's head (``TaskHead.text_columns``) and
    ``label_column`` exist; texts (``text``, and ``text_pair`` when required or present) are strings; the
    labels pass the head's ``validate_labels`` (classification: integers in ``[0, num_labels)``; regression:
    finite numbers; token classification: integer sequences in ``[0, num_labels)`` or ``-100``; seq2seq:
    target strings). ``label_column`` is ``label`` in the disjoint layout and ``label_<task>`` in the
    shared-input layout.
    """
    where = _where(task, split_name)
    if not isinstance(dataset, datasets.Dataset):
        raise ValueError(f"{where}: expected a datasets.Dataset, got {type(dataset).__name__}.")
    if dataset.num_rows == 0:
        raise ValueError(f"{where}: the split has no examples.")
    present = list(dataset.column_names)
    head = task.head_class()
    text_columns = list(head.text_columns(task))
    for column in (*text_columns, label_column):
        if column not in present:
            raise ValueError(f"{where}: missing column {column!r}; columns present: {present}.")
    if TEXT_PAIR_COLUMN in present and TEXT_PAIR_COLUMN not in text_columns:
        text_columns.append(TEXT_PAIR_COLUMN)  # a regression task may read a pair too (STS-B)
    for column in text_columns:
        check_texts(where, column, _arrow_column(dataset, column))
    head.validate_labels(task, _arrow_column(dataset, label_column), where, label_column)


def _arrow_column(dataset: datasets.Dataset, column: str) -> pa.ChunkedArray:
    """The column as Arrow data, honouring any ``select``/``shuffle`` indices mapping."""
    data = dataset.with_format("arrow")[column]
    return data if isinstance(data, pa.ChunkedArray) else pa.chunked_array([data])
