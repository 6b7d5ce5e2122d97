"""A task described by the user: CSV/TSV/JSON/JSON-lines/Parquet files plus column names and a kind.

Files are read with ``datasets.load_dataset`` (the ``csv``, ``json`` and ``parquet`` builders, as in
transformers' ``run_glue.py``), so compressed files (``.csv.gz``) work too.
"""

from __future__ import annotations

import codecs
import logging
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from hf_mtl.data.convert import check_columns_present, is_string_column, to_contract_columns
from hf_mtl.heads import TaskHead, head_class, registered_kinds
from hf_mtl.tasks import Task, TaskKind

logger = logging.getLogger(__name__)

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
    "encoding",
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


def check_text_encoding(path: str, encoding: str, who: str, split_name: str) -> None:
    """Raise naming the file, the byte and its line when the uncompressed text file ``path`` is not ``encoding``."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, lines = 0, 1
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:  # err.object: bytes held back from the last chunk, then this one
                held = len(err.object) - len(chunk)
                lines += err.object.count(b"\n", 0, err.start)
                raise ValueError(
                    f"{who}, split {split_name!r}: file {path!r} is not {encoding} text (byte "
                    f"0x{err.object[err.start]:02x} at offset {offset - held + err.start}, line {lines}); give its "
                    "encoding in the task spec, e.g. \"encoding\": \"latin-1\" or \"cp1252\"."
                ) from None
            if not chunk:
                return
            offset += len(chunk)
            lines += chunk.count(b"\n")


def read_files(paths: str | Path | list[str | Path], who: str, split_name: str,
               encoding: str | None = None) -> datasets.Dataset:
    """One split from one or more files of the same format, via ``datasets.load_dataset``.

    Empty files and (uncompressed) text files that are not in ``encoding`` (default UTF-8) are errors naming the
    file; ``encoding`` is passed to the CSV and JSON readers.
    """
    paths = [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise ValueError(f"{who}, split {split_name!r}: no files given.")
    builders = {builder_for(path, who) for path in paths}
    if len(builders) > 1:
        raise ValueError(
            f"{who}, split {split_name!r}: the files mix formats {sorted(b[0] for b in builders)}."
        )
    ((builder, options),) = builders
    options = dict(options)
    if encoding is not None:
        if builder == "parquet":
            raise ValueError(f"{who}: 'encoding' applies to CSV/TSV/JSON files, not Parquet ({paths}).")
        codecs.lookup(encoding)  # an unknown codec name raises LookupError naming it
        options["encoding"] = encoding
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{who}, split {split_name!r}: file {path!r} does not exist.")
        if Path(path).stat().st_size == 0:
            raise ValueError(f"{who}, split {split_name!r}: file {path!r} is empty (0 bytes).")
        if builder != "parquet" and Path(path).suffix.lower() not in _COMPRESSION_SUFFIXES:
            check_text_encoding(path, encoding or "utf-8", who, split_name)
    try:
        return datasets.load_dataset(builder, data_files=paths, split="train", **options)
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
    if values.dtype.kind in "f" and not np.all(np.isfinite(values)):
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(
            f"Task {name!r}, split 'train', column {label_column!r}: row {row} has no label (a blank cell or "
            f"{values[row]}); fill it in or drop the row."
        )
    if values.dtype.kind not in "iuf":
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
    encoding = spec.get("encoding")
    raw = {split: read_files(spec[f"{split}_file"], who, split, encoding) for split in ("train", "validation")}
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
    if head.has_classes:
        warn_unseen_classes(task, train)
    return task, train, validation


def warn_unseen_classes(task: Task, train: datasets.Dataset) -> None:
    """Warn when some declared classes never occur among the training labels (the head cannot learn them)."""
    seen = set(np.unique(train.with_format("arrow")["label"].to_numpy(zero_copy_only=False)).tolist())
    missing = [c for c in range(int(task.num_labels)) if c not in seen]
    if missing:
        names = [task.label_names[c] for c in missing] if task.label_names else missing
        logger.warning(
            "Task %r: %d of its %d classes never occur in the training data: %s. Check num_labels/label_names "
            "(classes are 0..num_labels-1; inferred integer classes start at 0).",
            task.name, len(missing), task.num_labels, names,
        )
