"""User CSV/TSV/JSON/JSONL files described by a dict spec, and the errors bad specs and files raise."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pandas as pd
import pytest

from hf_mtl.data.sources import load_task_data
from hf_mtl.tasks import TaskKind, TaskRole

REVIEWS = [
    ("The battery lasts two full days and charging is quick.", "positive"),
    ("Screen cracked after a week in my pocket.", "negative"),
    ("Does what it says, nothing more.", "neutral"),
    ("Best headphones I have owned, the noise cancelling is superb.", "positive"),
    ("Stopped pairing with my laptop after the update.", "negative"),
    ("Arrived on time; packaging was fine.", "neutral"),
]
LABELS = ["negative", "neutral", "positive"]


def _csv(path: Path, rows: list[dict], sep: str = ",") -> str:
    pd.DataFrame(rows).to_csv(path, index=False, sep=sep)
    return str(path)


def _review_files(tmp_path: Path, suffix: str = "csv") -> dict[str, str]:
    rows = [{"review": text, "sentiment": label} for text, label in REVIEWS]
    if suffix == "json":
        (tmp_path / "train.json").write_text(json.dumps(rows[:4]))
        (tmp_path / "dev.json").write_text(json.dumps(rows[4:]))
        return {"train_file": str(tmp_path / "train.json"), "validation_file": str(tmp_path / "dev.json")}
    return {
        "train_file": _csv(tmp_path / "train.csv", rows[:4]),
        "validation_file": _csv(tmp_path / "dev.csv", rows[4:]),
    }


def _spec(files: dict[str, str], **extra) -> dict:
    return {
        "name": "product_sentiment",
        "text_column": "review",
        "label_column": "sentiment",
        **files,
        **extra,
    }


def test_csv_with_string_labels_mapped_through_label_names(tmp_path):
    spec = _spec(
        _review_files(tmp_path), label_names=LABELS, role="auxiliary", weight=2.0, metrics=["accuracy"]
    )
    data = load_task_data(spec)
    assert data.task.kind is TaskKind.SINGLE_SENTENCE_CLASSIFICATION and data.task.num_labels == 3
    assert (
        data.task.role is TaskRole.AUXILIARY and data.task.weight == 2.0 and data.task.metrics == ["accuracy"]
    )
    assert data.train.column_names == ["text", "label"]
    assert list(data.train["text"]) == [text for text, _ in REVIEWS[:4]]
    assert list(data.train["label"]) == [2, 0, 1, 2] and list(data.validation["label"]) == [0, 1]
    assert data.train.features["label"] == datasets.Value("int64")


def test_json_array_with_inferred_label_names(tmp_path):
    data = load_task_data(_spec(_review_files(tmp_path, "json")))
    assert data.task.label_names == LABELS  # sorted distinct training labels
    assert list(data.validation["label"]) == [0, 1]


def test_jsonl_pair_task_with_integer_labels(tmp_path):
    rows = [
        {"q1": "How do I reset my router?", "q2": "What is the way to restart a router?", "dup": 1},
        {"q1": "How do I reset my router?", "q2": "Which router has the best range?", "dup": 0},
        {"q1": "Is coffee bad for sleep?", "q2": "Does caffeine keep you awake at night?", "dup": 1},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = {
        "name": "duplicates",
        "train_file": str(path),
        "validation_file": str(path),
        "text_column": "q1",
        "text_pair_column": "q2",
        "label_column": "dup",
    }
    data = load_task_data(spec)
    assert data.task.kind is TaskKind.SENTENCE_PAIR_CLASSIFICATION and data.task.num_labels == 2
    assert data.train.column_names == ["text", "text_pair", "label"]
    assert data.train[1] == {"text": rows[1]["q1"], "text_pair": rows[1]["q2"], "label": 0}


def test_tsv_regression_pair(tmp_path):
    rows = [
        {"a": "A cat sits on the mat.", "b": "A cat is sitting on a mat.", "score": 4.6},
        {"a": "A man plays guitar.", "b": "The stock market fell today.", "score": 0.1},
    ]
    path = _csv(tmp_path / "sts.tsv", rows, sep="\t")
    spec = {
        "name": "similarity",
        "kind": "regression",
        "train_file": path,
        "validation_file": path,
        "text_column": "a",
        "text_pair_column": "b",
        "label_column": "score",
    }
    data = load_task_data(spec)
    assert data.task.kind is TaskKind.REGRESSION
    assert data.train.column_names == ["text", "text_pair", "label"]
    assert list(data.train["label"]) == pytest.approx([4.6, 0.1])


def test_compressed_csv_and_several_training_files(tmp_path):
    rows = [{"review": text, "sentiment": label} for text, label in REVIEWS]
    first = _csv(tmp_path / "part1.csv.gz", rows[:2])
    second = _csv(tmp_path / "part2.csv.gz", rows[2:4])
    spec = _spec({"train_file": [first, second], "validation_file": first}, label_names=LABELS)
    data = load_task_data(spec)
    assert list(data.train["text"]) == [text for text, _ in REVIEWS[:4]]
    assert list(data.train["label"]) == [2, 0, 1, 2]


def test_seq2seq_targets_are_text(tmp_path):
    rows = [
        {
            "text": "In the beginning God created the heaven and the earth.",
            "label": "At the first God made the heaven and the earth.",
        }
    ]
    path = _csv(tmp_path / "translate.csv", rows)
    data = load_task_data(
        {"name": "simplify", "kind": "seq2seq", "train_file": path, "validation_file": path}
    )
    assert data.task.kind is TaskKind.SEQ2SEQ and data.train[0] == rows[0]


def test_unknown_spec_keys_are_listed(tmp_path):
    spec = _spec(_review_files(tmp_path), label_names=LABELS, epochs=3, text_col="review")
    with pytest.raises(
        ValueError, match=r"unknown keys \['epochs', 'text_col'\]; allowed keys: \['name', 'kind'"
    ):
        load_task_data(spec)


def test_missing_required_keys_and_files(tmp_path):
    files = _review_files(tmp_path)
    with pytest.raises(ValueError, match=r"'validation_file' is required"):
        load_task_data(_spec({"train_file": files["train_file"]}))
    with pytest.raises(
        FileNotFoundError,
        match=r"Task 'product_sentiment', split 'validation': file '.*nowhere.csv' does not exist",
    ):
        load_task_data(_spec({**files, "validation_file": str(tmp_path / "nowhere.csv")}))
    with pytest.raises(ValueError, match=r"cannot tell the format of '.*reviews.txt'"):
        load_task_data(_spec({**files, "train_file": str(tmp_path / "reviews.txt")}))
    with pytest.raises(ValueError, match=r"unknown kind 'multilabel'"):
        load_task_data(_spec(files, kind="multilabel"))


def test_missing_column_names_column_task_and_present_columns(tmp_path):
    spec = _spec(_review_files(tmp_path), label_names=LABELS, text_column="body")
    with pytest.raises(
        ValueError,
        match=r"Task 'product_sentiment', split 'train': missing column 'body'; columns present: \['review', 'sentiment'\]",
    ):
        load_task_data(spec)
    spec = _spec(_review_files(tmp_path), label_column="stars")
    with pytest.raises(
        ValueError, match=r"missing column 'stars'; columns present: \['review', 'sentiment'\]"
    ):
        load_task_data(spec)


def test_unknown_string_label_is_named(tmp_path):
    spec = _spec(_review_files(tmp_path), label_names=["negative", "positive"])
    with pytest.raises(
        ValueError,
        match=r"Task 'product_sentiment', split 'train', column 'sentiment': unknown label 'neutral' at row 2; "
        r"label_names are \['negative', 'positive'\]",
    ):
        load_task_data(spec)


def test_out_of_range_integer_label_is_named(tmp_path):
    rows = [{"text": text, "label": i % 3} for i, (text, _) in enumerate(REVIEWS)]
    rows[4]["label"] = 7
    path = _csv(tmp_path / "ints.csv", rows)
    good = _csv(tmp_path / "good.csv", rows[:3])
    spec = {"name": "stars", "train_file": good, "validation_file": path, "num_labels": 3}
    with pytest.raises(
        ValueError,
        match=r"Task 'stars', split 'validation', column 'label': label 7 at row 4 is outside \[0, 3\)",
    ):
        load_task_data(spec)


def test_missing_label_value_is_named(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("text,label\nfine product,1\nno label here,\nbroken,0\n")
    spec = {"name": "gaps", "train_file": str(path), "validation_file": str(path), "num_labels": 2}
    with pytest.raises(ValueError, match=r"Task 'gaps', split 'train', column 'label': row 1 "):
        load_task_data(spec)


def test_empty_split_is_named(tmp_path):
    spec = _spec(_review_files(tmp_path), label_names=LABELS)
    empty = tmp_path / "empty.csv"
    empty.write_text("review,sentiment\n")
    spec["validation_file"] = str(empty)
    with pytest.raises(
        ValueError, match=r"Task 'product_sentiment', split 'validation': the split has no examples"
    ):
        load_task_data(spec)


def test_inconsistent_kind_and_columns(tmp_path):
    files = _review_files(tmp_path)
    with pytest.raises(
        ValueError, match=r"text_pair_column='review' given for a single_sentence_classification task"
    ):
        load_task_data(
            _spec(files, kind="single_sentence_classification", text_pair_column="review", label_names=LABELS)
        )
    with pytest.raises(ValueError, match=r"token_classification tasks cannot be read from files"):
        load_task_data(_spec(files, kind="token_classification", label_names=LABELS))
    with pytest.raises(ValueError, match=r"data_dir/data_files apply to GLUE tasks"):
        load_task_data(_spec(files, label_names=LABELS), data_dir=str(tmp_path))
