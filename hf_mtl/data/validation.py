"""Checks that a task's dataset has the columns and label values its head expects.

Every loader in :mod:`hf_mtl.data.sources` runs these checks on each split, so that bad data fails at
load time with a message naming the task, split, column, offending value and row, instead of as a CUDA
assert or a silent NaN loss deep inside training.
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa

from hf_mtl.tasks import Task, TaskKind

TEXT_COLUMN = "text"
TEXT_PAIR_COLUMN = "text_pair"
LABEL_COLUMN = "label"
#: Label value ignored by the token-classification loss (sub-word pieces, special tokens).
IGNORE_INDEX = -100


def _where(task: Task, split_name: str) -> str:
    return f"Task {task.name!r}, split {split_name!r}"


def required_text_columns(task: Task) -> tuple[str, ...]:
    """The text columns a task of this kind reads: ``text``, plus ``text_pair`` for sentence pairs."""
    return (TEXT_COLUMN, TEXT_PAIR_COLUMN) if TaskKind(task.kind).is_pair else (TEXT_COLUMN,)


def validate_task_dataset(
    task: Task, dataset: datasets.Dataset, split_name: str, *, label_column: str = LABEL_COLUMN
) -> None:
    """Raise a ``ValueError`` unless ``dataset`` is a usable split of ``task``.

    Checks: at least one row; the text column(s) and ``label_column`` exist; texts (``text``, and
    ``text_pair`` when required or present) are strings;
    classification labels are integers in ``[0, num_labels)``; regression labels are finite numbers;
    token-classification labels are integer sequences in ``[0, num_labels)`` or ``-100``; seq2seq
    targets are strings. ``label_column`` is ``label`` in the disjoint layout and ``label_<task>`` in
    the shared-input layout.
    """
    where = _where(task, split_name)
    if not isinstance(dataset, datasets.Dataset):
        raise ValueError(f"{where}: expected a datasets.Dataset, got {type(dataset).__name__}.")
    if dataset.num_rows == 0:
        raise ValueError(f"{where}: the split has no examples.")
    present = list(dataset.column_names)
    for column in (*required_text_columns(task), label_column):
        if column not in present:
            raise ValueError(f"{where}: missing column {column!r}; columns present: {present}.")
    text_columns = list(required_text_columns(task))
    if TEXT_PAIR_COLUMN in present and TEXT_PAIR_COLUMN not in text_columns:
        text_columns.append(TEXT_PAIR_COLUMN)  # a regression task may read a pair too (STS-B)
    for column in text_columns:
        _check_texts(where, column, _arrow_column(dataset, column))
    kind = TaskKind(task.kind)
    labels = _arrow_column(dataset, label_column)
    if kind is TaskKind.REGRESSION:
        _check_regression_labels(where, label_column, labels)
    elif kind is TaskKind.SEQ2SEQ:
        _check_texts(where, label_column, labels)
    elif kind is TaskKind.TOKEN_CLASSIFICATION:
        _check_token_labels(where, label_column, labels, int(task.num_labels))
    else:
        _check_class_labels(where, label_column, labels, int(task.num_labels))


def _arrow_column(dataset: datasets.Dataset, column: str) -> pa.ChunkedArray:
    """The column as Arrow data, honouring any ``select``/``shuffle`` indices mapping."""
    data = dataset.with_format("arrow")[column]
    return data if isinstance(data, pa.ChunkedArray) else pa.chunked_array([data])


def _first_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_texts(where: str, column: str, data: pa.ChunkedArray) -> None:
    if pa.types.is_null(data.type):
        raise ValueError(f"{where}, column {column!r}: row 0 is empty (None), expected a string.")
    if not (pa.types.is_string(data.type) or pa.types.is_large_string(data.type)):
        raise ValueError(
            f"{where}, column {column!r}: expected strings, got Arrow type {data.type} "
            f"(first value {data[0].as_py()!r})."
        )
    if data.null_count:
        row = _first_row(data.is_null().to_numpy(zero_copy_only=False))
        raise ValueError(f"{where}, column {column!r}: row {row} is empty (None), expected a string.")


def _numeric_labels(where: str, column: str, data: pa.ChunkedArray, expected: str) -> np.ndarray:
    """Labels as a numpy array; raises on non-numeric types and missing values."""
    if pa.types.is_null(data.type):
        raise ValueError(f"{where}, column {column!r}: row 0 has no label (None), expected {expected}.")
    if not (pa.types.is_integer(data.type) or pa.types.is_floating(data.type)):
        raise ValueError(
            f"{where}, column {column!r}: expected {expected}, got Arrow type {data.type} "
            f"(row 0 holds {data[0].as_py()!r}). String labels must be mapped through the task's label_names."
        )
    if data.null_count:
        row = _first_row(data.is_null().to_numpy(zero_copy_only=False))
        raise ValueError(f"{where}, column {column!r}: row {row} has no label (None), expected {expected}.")
    return data.to_numpy()


def _check_class_ids(
    where: str,
    column: str,
    labels: np.ndarray,
    num_labels: int,
    *,
    row_of: np.ndarray | None = None,
    allow_ignore: bool = False,
) -> None:
    """``labels`` must hold integers in ``[0, num_labels)`` (or ``-100`` if ``allow_ignore``).

    ``row_of`` maps each entry of a flattened token-label array back to its dataset row.
    """
    rows = np.arange(len(labels)) if row_of is None else row_of
    if labels.dtype.kind == "f":
        not_integral = ~np.isfinite(labels) | (labels != np.round(labels))
        if not_integral.any():
            at = _first_row(not_integral)
            raise ValueError(
                f"{where}, column {column!r}: row {rows[at]} holds {labels[at].item()!r}, which is not an integer class id."
            )
    valid = (labels >= 0) & (labels < num_labels)
    if allow_ignore:
        valid |= labels == IGNORE_INDEX
    if not valid.all():
        at = _first_row(~valid)
        value = labels[at].item()
        raise ValueError(
            f"{where}, column {column!r}: label {int(value)!r} at row {rows[at]} is outside [0, {num_labels}) "
            f"(the task has num_labels={num_labels})."
        )


def _check_class_labels(where: str, column: str, data: pa.ChunkedArray, num_labels: int) -> None:
    labels = _numeric_labels(where, column, data, f"integer class ids in [0, {num_labels})")
    _check_class_ids(where, column, labels, num_labels)


def _check_regression_labels(where: str, column: str, data: pa.ChunkedArray) -> None:
    labels = _numeric_labels(where, column, data, "numbers").astype(np.float64)
    not_finite = ~np.isfinite(labels)
    if not_finite.any():
        row = _first_row(not_finite)
        raise ValueError(
            f"{where}, column {column!r}: row {row} holds {labels[row].item()!r}, expected a finite number."
        )


def _check_token_labels(where: str, column: str, data: pa.ChunkedArray, num_labels: int) -> None:
    if not (pa.types.is_list(data.type) or pa.types.is_large_list(data.type)):
        raise ValueError(
            f"{where}, column {column!r}: expected a list of token label ids per row, got Arrow type {data.type}."
        )
    lists = data.combine_chunks()
    if lists.null_count:
        row = _first_row(lists.is_null().to_numpy(zero_copy_only=False))
        raise ValueError(f"{where}, column {column!r}: row {row} has no token labels (None).")
    flat = pa.chunked_array([lists.flatten()])
    labels = _numeric_labels(where, column, flat, f"token label ids in [0, {num_labels}) or {IGNORE_INDEX}")
    row_of = np.repeat(np.arange(len(lists)), np.diff(lists.offsets.to_numpy()))
    _check_class_ids(where, column, labels, num_labels, row_of=row_of, allow_ignore=True)
