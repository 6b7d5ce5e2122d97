"""A task described by the user: CSV/TSV/JSON/JSON-lines/Parquet files plus column names and a kind.

Files are read with ``datasets.load_dataset`` (the ``csv``, ``json`` and ``parquet`` builders, as in
transformers' ``run_glue.py``), so compressed files (``.csv.gz``) work too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import numpy as np

from hf_mtl.data.convert import check_columns_present, is_string_column, to_contract_columns
from hf_mtl.heads import TaskHead, head_class, registered_kinds
from hf_mtl.tasks import Task, TaskKind

#: Keys of a user-file task spec.
USER_FILE_KEYS = (
    "name",
    "kind",
    "train_file",
    "validation_file",
    "text_column",
    "text_pair_column",
    "label_column",
    "label_names",
    "num_labels",
    "metrics",
    "role",
    "weight",
)
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
_BUILDERS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    ".csv": ("csv", ()),
    ".tsv": ("csv", (("delimiter", "\t"),)),
    ".json": ("json", ()),
    ".jsonl": ("json", ()),
    ".parquet": ("parquet", ()),
}


def builder_for(path: str, who: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The ``datasets`` builder name and its options for a file, from its extension."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    extension = suffixes[-1] if suffixes else ""
    if extension not in _BUILDERS:
        raise ValueError(
            f"{who}: cannot tell the format of {path!r} from its extension {extension!r}; "
            f"expected one of {sorted(_BUILDERS)} (optionally compressed: {list(_COMPRESSION_SUFFIXES)})."
        )
    return _BUILDERS[extension]


def read_files(paths: str | Path | list[str | Path], who: str, split_name: str) -> datasets.Dataset:
    """One split from one or more files of the same format, via ``datasets.load_dataset``."""
    paths = [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise ValueError(f"{who}, split {split_name!r}: no files given.")
    builders = {builder_for(path, who) for path in paths}
    if len(builders) > 1:
        raise ValueError(
            f"{who}, split {split_name!r}: the files mix formats {sorted(b[0] for b in builders)}."
        )
    ((builder, options),) = builders
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{who}, split {split_name!r}: file {path!r} does not exist.")
    try:
        return datasets.load_dataset(builder, data_files=paths, split="train", **dict(options))
    except ValueError as error:
        # datasets refuses files without rows ('Instruction "train" corresponds to no data!').
        if "no data" not in str(error):
            raise
        raise ValueError(f"{who}, split {split_name!r}: the split has no examples ({paths}).") from error


def _resolve_kind(spec: dict[str, Any]) -> type[TaskHead]:
    """The head of the spec's kind; without one, a pair task if a second text column is named, else single sentence."""
    if "kind" not in spec:
        return head_class(
            TaskKind.SENTENCE_PAIR_CLASSIFICATION
            if spec.get("text_pair_column")
            else TaskKind.SINGLE_SENTENCE_CLASSIFICATION
        )
    try:
        return head_class(spec["kind"])
    except ValueError:
        raise ValueError(
            f"Task {spec['name']!r}: unknown kind {spec['kind']!r}; expected one of {registered_kinds()}."
        ) from None


def _infer_classes(name: str, train: datasets.Dataset, label_column: str) -> dict[str, Any]:
    """Class names or count from the training labels when the spec gives neither.

    String labels: their sorted distinct values become ``label_names``. Integer labels:
    ``num_labels = max + 1`` (at least 2).
    """
    labels = train.with_format("arrow")[label_column]
    if is_string_column(train, label_column):
        if labels.null_count:
            raise ValueError(
                f"Task {name!r}, split 'train', column {label_column!r}: some labels are missing (None)."
            )
        return {"label_names": sorted(set(labels.to_pylist()))}
    values = labels.to_numpy(zero_copy_only=False)
    if values.dtype.kind not in "iuf" or not np.all(np.isfinite(values)):
        raise ValueError(
            f"Task {name!r}, split 'train', column {label_column!r}: cannot infer the classes from labels of "
            f"type {labels.type}; give label_names or num_labels."
        )
    return {"num_labels": max(2, int(values.max()) + 1)}


def load_user_task(spec: dict[str, Any]) -> tuple[Task, datasets.Dataset, datasets.Dataset]:
    """The task a user-file spec describes and its train/validation splits in contract columns."""
    unknown = set(spec) - set(USER_FILE_KEYS)
    if unknown:
        raise ValueError(
            f"Task spec {spec.get('name', '?')!r}: unknown keys {sorted(unknown)}; allowed keys: {list(USER_FILE_KEYS)}."
        )
    for key in ("name", "train_file", "validation_file"):
        if not spec.get(key):
            raise ValueError(
                f"Task spec {spec.get('name', '?')!r}: {key!r} is required for a task read from files."
            )
    name = spec["name"]
    head = _resolve_kind(spec)
    if not head.readable_from_files:
        raise ValueError(
            f"Task {name!r}: {head.kind} tasks cannot be read from files by load_task_data "
            "(one label per word needs word lists, not text); build a TaskData with a label list per row."
        )
    text_pair_column = spec.get("text_pair_column")
    if head.requires_pair and text_pair_column is None:
        text_pair_column = "text_pair"
    if text_pair_column is not None and not (head.requires_pair or head.accepts_pair):
        raise ValueError(
            f"Task {name!r}: text_pair_column={text_pair_column!r} given for a {head.kind} task, which reads one "
            "text; use kind 'sentence_pair_classification' (or 'regression' for a scored pair)."
        )
    text_column = spec.get("text_column", "text")
    label_column = spec.get("label_column", "label")
    who = f"Task {name!r}"
    raw = {split: read_files(spec[f"{split}_file"], who, split) for split in ("train", "validation")}
    task_fields = {
        key: spec[key] for key in ("label_names", "num_labels", "metrics", "role", "weight") if key in spec
    }
    if head.has_classes and "label_names" not in spec and "num_labels" not in spec:
        check_columns_present(name, "train", raw["train"], [label_column])
        task_fields.update(_infer_classes(name, raw["train"], label_column))
    task = Task(name=name, kind=head.kind, **task_fields)
    train, validation = (
        to_contract_columns(
            task,
            raw[split],
            split,
            text_column=text_column,
            text_pair_column=text_pair_column,
            label_column=label_column,
        )
        for split in ("train", "validation")
    )
    return task, train, validation
