"""GLUE tasks by name (Wang et al., 2019), mapped to the contract columns.

By default the data come from the Hugging Face Hub (``datasets.load_dataset("nyu-mll/glue", name)``).
Offline, point ``data_dir`` at a copy of the hub repository (``<data_dir>/<name>/<split>-*.parquet``,
or ``<data_dir>/<split>.<ext>``) or give ``data_files={"train": ..., "validation": ...}``; the files must
have GLUE's columns (e.g. ``sentence1``, ``sentence2``, ``label``). Labels may be class ids or the
label names below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets

from hf_mtl.data.convert import to_contract_columns
from hf_mtl.data.user_files import read_files
from hf_mtl.tasks import Task, TaskKind

GLUE_HUB_ID = "nyu-mll/glue"
LOCAL_FILE_EXTENSIONS = ("parquet", "csv", "tsv", "json", "jsonl")


@dataclass(frozen=True)
class GlueTask:
    """Column names and label names of one GLUE configuration, as on the hub."""

    text_column: str
    text_pair_column: str | None
    label_names: tuple[str, ...] | None  # None: regression (STS-B)
    metrics: tuple[str, ...]
    validation_split: str = "validation"

    def make_task(self, name: str) -> Task:
        if self.label_names is None:
            return Task(name, TaskKind.REGRESSION, metrics=list(self.metrics))
        kind = (
            TaskKind.SENTENCE_PAIR_CLASSIFICATION
            if self.text_pair_column
            else TaskKind.SINGLE_SENTENCE_CLASSIFICATION
        )
        return Task(name, kind, label_names=list(self.label_names), metrics=list(self.metrics))


# Metrics follow the GLUE leaderboard: Matthews correlation for CoLA, F1 with accuracy for MRPC/QQP,
# Pearson/Spearman for STS-B, accuracy elsewhere. MNLI is evaluated on the matched validation set.
GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("sentence", None, ("unacceptable", "acceptable"), ("matthews_correlation", "accuracy")),
    "sst2": GlueTask("sentence", None, ("negative", "positive"), ("accuracy",)),
    "mrpc": GlueTask("sentence1", "sentence2", ("not_equivalent", "equivalent"), ("f1", "accuracy")),
    "qqp": GlueTask("question1", "question2", ("not_duplicate", "duplicate"), ("f1", "accuracy")),
    "stsb": GlueTask("sentence1", "sentence2", None, ("pearson", "spearmanr")),
    "mnli": GlueTask(
        "premise",
        "hypothesis",
        ("entailment", "neutral", "contradiction"),
        ("accuracy",),
        "validation_matched",
    ),
    "qnli": GlueTask("question", "sentence", ("entailment", "not_entailment"), ("accuracy",)),
    "rte": GlueTask("sentence1", "sentence2", ("entailment", "not_entailment"), ("accuracy",)),
    "wnli": GlueTask("sentence1", "sentence2", ("not_entailment", "entailment"), ("accuracy",)),
}


def _files_in_hub_layout(name: str, data_dir: str | Path, split: str) -> list[str]:
    """``<data_dir>/<name>/<split>-*.<ext>`` (the hub repository's layout) or ``<data_dir>/<split>.<ext>``."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"GLUE task {name!r}: data_dir {str(root)!r} is not a directory.")
    folder = root / name if (root / name).is_dir() else root
    for extension in LOCAL_FILE_EXTENSIONS:
        found = sorted(folder.glob(f"{split}-*.{extension}")) + sorted(folder.glob(f"{split}.{extension}"))
        if found:
            return [str(path) for path in found]
    raise FileNotFoundError(
        f"GLUE task {name!r}: no {split!r} file in {str(folder)!r}; expected {split}-*.<ext> or {split}.<ext> "
        f"with <ext> one of {list(LOCAL_FILE_EXTENSIONS)}."
    )


def load_glue(
    name: str,
    *,
    data_dir: str | Path | None = None,
    data_files: dict[str, str | list[str]] | None = None,
) -> tuple[Task, datasets.Dataset, datasets.Dataset]:
    """The task and its train/validation splits in contract columns; from the hub unless local files are given."""
    glue = GLUE_TASKS[name]
    task = glue.make_task(name)
    if data_dir is None and data_files is None:
        try:
            hub = datasets.load_dataset(GLUE_HUB_ID, name)
        except ConnectionError as error:
            raise ConnectionError(
                f"GLUE task {name!r} loads from the Hugging Face Hub ({GLUE_HUB_ID!r}), which could not be reached "
                f"({error}). Offline, pass data_dir (a copy of the hub repository) or data_files with GLUE's columns."
            ) from error
        raw = {"train": hub["train"], "validation": hub[glue.validation_split]}
    else:
        if data_dir is not None and data_files is not None:
            raise ValueError(f"GLUE task {name!r}: give data_dir or data_files, not both.")
        if data_files is not None:
            unknown = set(data_files) - {"train", "validation", glue.validation_split}
            if unknown:
                raise ValueError(
                    f"GLUE task {name!r}: unknown data_files keys {sorted(unknown)}; "
                    f"expected 'train' and 'validation'."
                )
        raw = {}
        for split, hub_split in (("train", "train"), ("validation", glue.validation_split)):
            if data_files is not None:
                key = next((k for k in (split, hub_split) if k in data_files), None)
                if key is None:
                    raise ValueError(
                        f"GLUE task {name!r}: data_files has no {split!r} entry (keys given: {sorted(data_files)})."
                    )
                raw[split] = read_files(who=f"GLUE task {name!r}", split_name=split, paths=data_files[key])
            else:
                raw[split] = read_files(
                    who=f"GLUE task {name!r}",
                    split_name=split,
                    paths=_files_in_hub_layout(name, data_dir, hub_split),
                )
    converted = [
        to_contract_columns(
            task,
            raw[split],
            split,
            text_column=glue.text_column,
            text_pair_column=glue.text_pair_column,
            label_column="label",
        )
        for split in ("train", "validation")
    ]
    return task, converted[0], converted[1]
