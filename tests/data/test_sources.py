"""Embedded real corpora and presets: columns, fixed sizes, labels, determinism, split hygiene."""

from __future__ import annotations

import re
import sqlite3

import datasets
import numpy as np
import pytest

from hf_mtl.data import embedded
from hf_mtl.data.sources import (
    SharedInputData,
    TaskData,
    available_presets,
    available_tasks,
    load_preset,
    load_task_data,
    majority_baseline,
)
from hf_mtl.tasks import Task, TaskKind, TaskRole

# (kind, label names, train rows, validation rows) of the fixed embedded splits, as in docs/data.md.
EXPECTED = {
    "rotten_tomatoes": (TaskKind.SINGLE_SENTENCE_CLASSIFICATION, ["rotten", "fresh"], 4363, 500),
    "bible_paraphrase": (TaskKind.SENTENCE_PAIR_CLASSIFICATION, ["different", "paraphrase"], 4000, 500),
    "debate_party": (TaskKind.SINGLE_SENTENCE_CLASSIFICATION, ["Democratic", "Republican"], 500, 200),
}


@pytest.fixture(scope="module")
def embedded_tasks() -> dict[str, TaskData]:
    return {name: load_task_data(name) for name in EXPECTED}


@pytest.fixture(scope="module")
def drug_reviews() -> SharedInputData:
    return load_preset("drug_reviews")


def _texts(dataset: datasets.Dataset) -> set[str]:
    columns = [c for c in ("text", "text_pair") if c in dataset.column_names]
    return {t for c in columns for t in dataset[c]}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_embedded_task_columns_sizes_and_labels(embedded_tasks, name):
    kind, label_names, n_train, n_validation = EXPECTED[name]
    data = embedded_tasks[name]
    assert data.task.name == name and data.task.kind is kind and data.task.label_names == label_names
    pair = ["text_pair"] if kind.is_pair else []
    for split, size in ((data.train, n_train), (data.validation, n_validation)):
        assert split.column_names == ["text", *pair, "label"]
        assert split.num_rows == size
        assert split.features["label"] == datasets.Value("int64")
        assert set(split["label"]) == {0, 1}
        assert all(isinstance(t, str) and t.strip() for t in split["text"])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_embedded_split_is_deterministic(embedded_tasks, name):
    again = load_task_data(name)
    assert again.train.to_dict() == embedded_tasks[name].train.to_dict()
    assert again.validation.to_dict() == embedded_tasks[name].validation.to_dict()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_no_text_in_both_train_and_validation(embedded_tasks, name):
    data = embedded_tasks[name]
    assert not _texts(data.train) & _texts(data.validation)


@pytest.mark.parametrize("name", ["rotten_tomatoes", "debate_party"])
def test_single_sentence_texts_are_unique(embedded_tasks, name):
    for split in (embedded_tasks[name].train, embedded_tasks[name].validation):
        assert len(set(split["text"])) == split.num_rows


def test_debate_statements_hold_no_moderator_turns(embedded_tasks):
    data = embedded_tasks["debate_party"]
    for text in list(data.train["text"]) + list(data.validation["text"]):
        assert "Moderator:" not in text and not re.search(r"\b[A-Z]{2,}:", text) and "(APPLAUSE)" not in text
        assert len(text.split()) >= embedded.DEBATE_MIN_WORDS


def _bible_references() -> tuple[dict[str, tuple[int, int, int]], dict[str, tuple[int, int, int]]]:
    """Text -> (book, chapter, verse) for the two versions, read straight from the database."""
    path = embedded.package_file(*embedded.BIBLE_DB_FILE)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT bbName, bNumber, cNumber, vNumber, vText FROM bible WHERE bbName IN (?, ?)",
            (embedded.BIBLE_SOURCE_VERSION, embedded.BIBLE_PARAPHRASE_VERSION),
        ).fetchall()
    source, paraphrase = {}, {}
    for version, book, chapter, verse, text in rows:
        target = source if version == embedded.BIBLE_SOURCE_VERSION else paraphrase
        target[" ".join(text.split())] = (book, chapter, verse)
    return source, paraphrase


def test_bible_pairs_are_balanced_with_hard_negatives(embedded_tasks):
    source_ref, paraphrase_ref = _bible_references()
    data = embedded_tasks["bible_paraphrase"]
    for split in (data.train, data.validation):
        n = split.num_rows
        kinds = {"positive": 0, "hard": 0, "random": 0}
        for text, pair, label in zip(split["text"], split["text_pair"], split["label"], strict=True):
            (b1, c1, v1), (b2, c2, v2) = source_ref[text], paraphrase_ref[pair]
            if label == 1:
                assert (b1, c1, v1) == (b2, c2, v2)
                kinds["positive"] += 1
            elif (b1, c1) == (b2, c2):
                assert 1 <= abs(v1 - v2) <= embedded.BIBLE_HARD_NEGATIVE_MAX_OFFSET
                kinds["hard"] += 1
            else:
                kinds["random"] += 1
        assert kinds == {"positive": n // 2, "hard": n // 4, "random": n - n // 2 - n // 4}


def test_bible_split_is_by_chapter(embedded_tasks):
    source_ref, _ = _bible_references()
    data = embedded_tasks["bible_paraphrase"]
    train_chapters = {source_ref[t][:2] for t in data.train["text"]}
    validation_chapters = {source_ref[t][:2] for t in data.validation["text"]}
    assert not train_chapters & validation_chapters


def test_drug_reviews_shared_columns(drug_reviews):
    assert isinstance(drug_reviews, SharedInputData)
    rating, condition = drug_reviews.tasks
    assert (rating.name, condition.name) == ("rating", "condition")
    assert rating.label_names == ["negative", "neutral", "positive"]
    assert len(condition.label_names) == embedded.DRUG_TOP_CONDITIONS
    assert condition.label_names[0] == "Birth Control" and "Bipolar Disorder" in condition.label_names
    for split in (drug_reviews.train, drug_reviews.validation):
        assert split.column_names == ["text", "label_rating", "label_condition"]
        assert set(split["label_rating"]) == {0, 1, 2}
        assert set(split["label_condition"]) == set(range(embedded.DRUG_TOP_CONDITIONS))
        assert not any(re.search(r"&#?\w+;", t) for t in split["text"])
    assert (drug_reviews.train.num_rows, drug_reviews.validation.num_rows) == (318, 160)
    assert not set(drug_reviews.train["text"]) & set(drug_reviews.validation["text"])


def test_clean_review_unescapes_html():
    assert (
        embedded.clean_review('"I&#039;ve had &quot;no&quot; side effects.\r\n\r\n"')
        == 'I\'ve had "no" side effects.'
    )


def test_presets():
    assert {"embedded_mixture", "drug_reviews"} <= set(available_presets())
    mixture = load_preset("embedded_mixture", max_train_samples=64, max_eval_samples=32, seed=1)
    assert [d.task.name for d in mixture] == list(EXPECTED)
    assert all(d.train.num_rows == 64 and d.validation.num_rows == 32 for d in mixture)
    with pytest.raises(ValueError, match=r"Unknown preset 'glue_all'.*embedded_mixture.*drug_reviews"):
        load_preset("glue_all")


def test_subsampling_is_seeded_subset(embedded_tasks, drug_reviews):
    full = embedded_tasks["debate_party"]
    first = load_task_data("debate_party", max_train_samples=100, max_eval_samples=50, seed=7)
    second = load_task_data("debate_party", max_train_samples=100, max_eval_samples=50, seed=7)
    other = load_task_data("debate_party", max_train_samples=100, seed=8)
    assert (first.train.num_rows, first.validation.num_rows) == (100, 50)
    assert list(first.train["text"]) == list(second.train["text"])
    assert list(first.validation["text"]) == list(second.validation["text"])
    assert list(first.train["text"]) != list(other.train["text"])
    assert set(first.train["text"]) <= set(full.train["text"])
    assert load_task_data("debate_party", max_train_samples=10_000).train.num_rows == full.train.num_rows
    shared = load_preset("drug_reviews", max_train_samples=40, max_eval_samples=20)
    assert (shared.train.num_rows, shared.validation.num_rows) == (40, 20)
    assert set(shared.train["text"]) <= set(drug_reviews.train["text"])
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="max_train_samples must be a positive integer"):
            load_task_data("debate_party", max_train_samples=bad)


def test_majority_baseline():
    dataset = datasets.Dataset.from_dict({"label": [2, 0, 2, 1, 2], "score": [0.1, 0.2, 0.3, 0.4, 0.5]})
    assert majority_baseline(dataset) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="not class ids"):
        majority_baseline(dataset, "score")
    with pytest.raises(ValueError, match="no column 'label_rating'"):
        majority_baseline(dataset, "label_rating")


def test_majority_baselines_match_label_counts(embedded_tasks, drug_reviews):
    for data in embedded_tasks.values():
        counts = np.bincount(list(data.validation["label"]))
        assert majority_baseline(data.validation) == counts.max() / counts.sum()
    condition_counts = np.bincount(list(drug_reviews.validation["label_condition"]))
    assert majority_baseline(drug_reviews.validation, "label_condition") == condition_counts.max() / 160


def test_unknown_task_name_lists_known_names():
    with pytest.raises(
        ValueError, match=r"Unknown task 'imdb'.*rotten_tomatoes.*bible_paraphrase.*sst2.*wnli"
    ):
        load_task_data("imdb")
    assert available_tasks()[:3] == list(EXPECTED)


def test_builtin_spec_dict_overrides_role_and_weight():
    data = load_task_data({"name": "debate_party", "role": "auxiliary", "weight": 0.5}, max_train_samples=8)
    assert data.task.role is TaskRole.AUXILIARY and data.task.weight == 0.5


def test_builtin_spec_dict_rejects_unknown_keys():
    with pytest.raises(
        ValueError,
        match=r"unknown keys \['label_names', 'lr'\].*accepts \['name', 'role', 'weight', 'metrics'\]",
    ):
        load_task_data({"name": "rotten_tomatoes", "lr": 1e-3, "label_names": ["a", "b"]})
    with pytest.raises(ValueError, match="data_dir/data_files apply to GLUE only"):
        load_task_data("rotten_tomatoes", data_dir="/tmp")


def test_shared_input_data_validates_each_task():
    tasks = [Task("a", label_names=["x", "y"]), Task("b", label_names=["p", "q", "r"])]
    good = datasets.Dataset.from_dict({"text": ["one", "two"], "label_a": [0, 1], "label_b": [2, 0]})
    SharedInputData(tasks, good, good)
    bad = datasets.Dataset.from_dict({"text": ["one", "two"], "label_a": [0, 1], "label_b": [2, 3]})
    with pytest.raises(ValueError, match=r"Task 'b', split 'validation', column 'label_b': label 3 at row 1"):
        SharedInputData(tasks, good, bad)
    with pytest.raises(ValueError, match="missing column 'label_b'"):
        SharedInputData(tasks, good.remove_columns("label_b"), good)
    with pytest.raises(ValueError, match="used twice"):
        SharedInputData([tasks[0], tasks[0]], good, good)
