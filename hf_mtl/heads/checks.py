"""Checks of a dataset's label column as Arrow data, shared by the heads' ``validate_labels``.

Each raises a ``ValueError`` naming where (task and split), the column, the offending value and its row,
so that bad data fail at load time instead of as a CUDA assert or a silent NaN loss inside training.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from hf_mtl.heads.base import IGNORE_INDEX


def first_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def check_texts(where: str, column: str, data: pa.ChunkedArray) -> None:
    if pa.types.is_null(data.type):
        raise ValueError(f"{where}, column {column!r}: row 0 is empty (None), expected a string.")
    if not (pa.types.is_string(data.type) or pa.types.is_large_string(data.type)):
        raise ValueError(
            f"{where}, column {column!r}: expected strings, got Arrow type {data.type} "
            f"(first value {data[0].as_py()!r})."
        )
    if data.null_count:
        row = first_row(data.is_null().to_numpy(zero_copy_only=False))
        raise ValueError(f"{where}, column {column!r}: row {row} is empty (None), expected a string.")


def numeric_labels(where: str, column: str, data: pa.ChunkedArray, expected: str) -> np.ndarray:
    """Labels as a numpy array; raises on non-numeric types and missing values."""
    if pa.types.is_null(data.type):
        raise ValueError(f"{where}, column {column!r}: row 0 has no label (None), expected {expected}.")
    if not (pa.types.is_integer(data.type) or pa.types.is_floating(data.type)):
        raise ValueError(
            f"{where}, column {column!r}: expected {expected}, got Arrow type {data.type} "
            f"(row 0 holds {data[0].as_py()!r}). String labels must be mapped through the task's label_names."
        )
    if data.null_count:
        row = first_row(data.is_null().to_numpy(zero_copy_only=False))
        raise ValueError(f"{where}, column {column!r}: row {row} has no label (None), expected {expected}.")
    return data.to_numpy()


def check_class_ids(
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
            at = first_row(not_integral)
            raise ValueError(
                f"{where}, column {column!r}: row {rows[at]} holds {labels[at].item()!r}, which is not an integer class id."
            )
    valid = (labels >= 0) & (labels < num_labels)
    if allow_ignore:
        valid |= labels == IGNORE_INDEX
    if not valid.all():
        at = first_row(~valid)
        value = labels[at].item()
        raise ValueError(
            f"{where}, column {column!r}: label {int(value)!r} at row {rows[at]} is outside [0, {num_labels}) "
            f"(the task has num_labels={num_labels})."
        )


def check_class_labels(where: str, column: str, data: pa.ChunkedArray, num_labels: int) -> None:
    labels = numeric_labels(where, column, data, f"integer class ids in [0, {num_labels})")
    check_class_ids(where, column, labels, num_labels)


def check_regression_labels(where: str, column: str, data: pa.ChunkedArray) -> None:
    labels = numeric_labels(where, column, data, "numbers").astype(np.float64)
    not_finite = ~np.isfinite(labels)
    if not_finite.any():
        row = first_row(not_finite)
        raise ValueError(
            f"{where}, column {column!r}: row {row} holds {labels[row].item()!r}, expected a finite number."
        )


def check_token_labels(where: str, column: str, data: pa.ChunkedArray, num_labels: int) -> None:
    if not (pa.types.is_list(data.type) or pa.types.is_large_list(data.type)):
        raise ValueError(
            f"{where}, column {column!r}: expected a list of token label ids per row, got Arrow type {data.type}."
        )
    lists = data.combine_chunks()
    if lists.null_count:
        row = first_row(lists.is_null().to_numpy(zero_copy_only=False))
        raise ValueError(f"{where}, column {column!r}: row {row} has no token labels (None).")
    flat = pa.chunked_array([lists.flatten()])
    labels = numeric_labels(where, column, flat, f"token label ids in [0, {num_labels}) or {IGNORE_INDEX}")
    row_of = np.repeat(np.arange(len(lists)), np.diff(lists.offsets.to_numpy()))
    check_class_ids(where, column, labels, num_labels, row_of=row_of, allow_ignore=True)
