"""validate_task_dataset: every kind of bad split raises a ValueError naming task, split, column, value, row."""

from __future__ import annotations

import math

import datasets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_mtl.data.sources import validate_task_dataset
from hf_mtl.tasks import Task, TaskKind

SENTIMENT = Task("sentiment", label_names=["negative", "neutral", "positive"])
PARAPHRASE = Task("paraphrase", TaskKind.SENTENCE_PAIR_CLASSIFICATION, label_names=["different", "same"])
SIMILARITY = Task("similarity", TaskKind.REGRESSION)
TAGGING = Task("tagging", TaskKind.TOKEN_CLASSIFICATION, label_names=["O", "B-PER", "I-PER"])
SUMMARY = Task("summary", TaskKind.SEQ2SEQ)
TEXTS = ["Great value.", "Broke in a day.", "It is fine.", "Would buy again."]


def _dataset(**columns) -> datasets.Dataset:
    return datasets.Dataset.from_dict(columns)


def test_valid_splits_pass():
    validate_task_dataset(SENTIMENT, _dataset(text=TEXTS, label=[2, 0, 1, 2]), "train")
    validate_task_dataset(
        PARAPHRASE, _dataset(text=TEXTS, text_pair=TEXTS[::-1], label=[0, 1, 1, 0]), "train"
    )
    validate_task_dataset(SIMILARITY, _dataset(text=TEXTS, label=[0.5, 4.0, 2, 3.25]), "validation")
    validate_task_dataset(TAGGING, _dataset(text=TEXTS[:2], label=[[-100, 1, 2, 0], [0, 0]]), "train")
    validate_task_dataset(SUMMARY, _dataset(text=TEXTS[:2], label=["Good.", "Bad."]), "train")
    validate_task_dataset(
        SENTIMENT, _dataset(text=TEXTS, label_sentiment=[0, 1, 2, 0]), "train", label_column="label_sentiment"
    )


def test_not_a_dataset():
    with pytest.raises(
        ValueError, match=r"Task 'sentiment', split 'train': expected a datasets.Dataset, got dict"
    ):
        validate_task_dataset(SENTIMENT, {"text": TEXTS}, "train")


def test_empty_split():
    with pytest.raises(ValueError, match=r"Task 'sentiment', split 'validation': the split has no examples"):
        validate_task_dataset(SENTIMENT, _dataset(text=[], label=[]), "validation")


def test_missing_columns_listed():
    with pytest.raises(
        ValueError,
        match=r"Task 'sentiment', split 'train': missing column 'text'; columns present: \['sentence', 'label'\]",
    ):
        validate_task_dataset(SENTIMENT, _dataset(sentence=TEXTS, label=[0, 1, 2, 0]), "train")
    with pytest.raises(ValueError, match=r"Task 'paraphrase', split 'train': missing column 'text_pair'"):
        validate_task_dataset(PARAPHRASE, _dataset(text=TEXTS, label=[0, 1, 1, 0]), "train")
    with pytest.raises(
        ValueError, match=r"missing column 'label_sentiment'; columns present: \['text', 'label'\]"
    ):
        validate_task_dataset(
            SENTIMENT, _dataset(text=TEXTS, label=[0, 1, 2, 0]), "train", label_column="label_sentiment"
        )


def test_bad_texts():
    with pytest.raises(
        ValueError, match=r"Task 'sentiment', split 'train', column 'text': row 2 is empty \(None\)"
    ):
        validate_task_dataset(SENTIMENT, _dataset(text=["a", "b", None, "d"], label=[0, 1, 2, 0]), "train")
    with pytest.raises(
        ValueError, match=r"column 'text': expected strings, got Arrow type int64 \(first value 5\)"
    ):
        validate_task_dataset(SENTIMENT, _dataset(text=[5, 6], label=[0, 1]), "train")
    with pytest.raises(
        ValueError, match=r"Task 'similarity', split 'train', column 'text_pair': row 0 is empty"
    ):
        validate_task_dataset(SIMILARITY, _dataset(text=["a"], text_pair=[None], label=[1.0]), "train")


def test_class_labels_out_of_range_name_value_and_row():
    with pytest.raises(
        ValueError,
        match=r"Task 'sentiment', split 'train', column 'label': label 3 at row 1 is outside \[0, 3\) \(the task has num_labels=3\)",
    ):
        validate_task_dataset(SENTIMENT, _dataset(text=TEXTS, label=[0, 3, 1, 5]), "train")
    with pytest.raises(ValueError, match=r"label -1 at row 3 is outside \[0, 2\)"):
        validate_task_dataset(PARAPHRASE, _dataset(text=TEXTS, text_pair=TEXTS, label=[0, 1, 1, -1]), "test")


def test_class_labels_of_wrong_type():
    with pytest.raises(
        ValueError,
        match=r"column 'label': expected integer class ids in \[0, 3\), got Arrow type string \(row 0 holds 'positive'\)\. String labels must be mapped",
    ):
        validate_task_dataset(SENTIMENT, _dataset(text=TEXTS[:2], label=["positive", "negative"]), "train")
    with pytest.raises(ValueError, match=r"row 1 holds 0.5, which is not an integer class id"):
        validate_task_dataset(SENTIMENT, _dataset(text=TEXTS[:2], label=[1.0, 0.5]), "train")
    with pytest.raises(ValueError, match=r"column 'label': row 1 has no label \(None\)"):
        validate_task_dataset(SENTIMENT, _dataset(text=TEXTS[:2], label=[1, None]), "train")


def test_regression_labels():
    with pytest.raises(
        ValueError,
        match=r"Task 'similarity', split 'validation', column 'label': row 2 holds nan, expected a finite number",
    ):
        validate_task_dataset(SIMILARITY, _dataset(text=TEXTS[:3], label=[1.0, 2.0, math.nan]), "validation")
    with pytest.raises(ValueError, match=r"row 0 holds inf"):
        validate_task_dataset(SIMILARITY, _dataset(text=TEXTS[:1], label=[math.inf]), "validation")
    with pytest.raises(ValueError, match=r"expected numbers, got Arrow type string"):
        validate_task_dataset(SIMILARITY, _dataset(text=TEXTS[:1], label=["high"]), "validation")


def test_token_labels():
    with pytest.raises(
        ValueError,
        match=r"Task 'tagging', split 'train', column 'label': label 3 at row 1 is outside \[0, 3\)",
    ):
        validate_task_dataset(TAGGING, _dataset(text=TEXTS[:2], label=[[0, 1], [2, 3, 0]]), "train")
    with pytest.raises(ValueError, match=r"expected a list of token label ids per row, got Arrow type int64"):
        validate_task_dataset(TAGGING, _dataset(text=TEXTS[:2], label=[0, 1]), "train")


def test_seq2seq_targets_must_be_text():
    with pytest.raises(ValueError, match=r"Task 'summary', split 'train', column 'label': expected strings"):
        validate_task_dataset(SUMMARY, _dataset(text=TEXTS[:2], label=[1, 2]), "train")


def test_rows_are_counted_in_the_selected_view():
    dataset = _dataset(text=TEXTS, label=[0, 1, 7, 2]).select([3, 2, 0])
    with pytest.raises(ValueError, match=r"label 7 at row 1 "):
        validate_task_dataset(SENTIMENT, dataset, "train")
    validate_task_dataset(SENTIMENT, dataset.select([0, 2]), "train")


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 2), min_size=1, max_size=30),
    data=st.data(),
)
def test_first_bad_label_is_reported(labels, data):
    bad_row = data.draw(st.integers(0, len(labels) - 1))
    bad_value = data.draw(st.one_of(st.integers(3, 1000), st.integers(-1000, -1)))
    labels = labels[:bad_row] + [bad_value] + labels[bad_row + 1 :]
    dataset = _dataset(text=["x"] * len(labels), label=labels)
    with pytest.raises(ValueError, match=rf"label {bad_value} at row {bad_row} is outside \[0, 3\)"):
        validate_task_dataset(SENTIMENT, dataset, "train")
