"""User files that are empty, not UTF-8, have a blank label, or declare classes the training data never has."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from hf_mtl.data.user_files import load_user_task


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.csv"
    pd.DataFrame({"text": ["a fine film", "dull", "great", "awful"], "label": [0, 1, 0, 1]}).to_csv(path, index=False)
    return str(path)


def spec(train, validation, **extra):
    return {"name": "reviews", "train_file": str(train), "validation_file": str(validation), **extra}


def test_a_zero_byte_file_is_named(tmp_path, good):
    empty = tmp_path / "empty.csv"
    empty.touch()
    with pytest.raises(ValueError, match=r"split 'train': file '.*empty.csv' is empty \(0 bytes\)"):
        load_user_task(spec(empty, good))


def test_a_latin1_file_is_named_and_reads_with_an_encoding_option(tmp_path, good):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\nun film très réussi,0\nmauvais,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"'.*latin.csv' is not utf-8 text \(byte 0xe8 at offset \d+, line 2\); "
                                         r"give its encoding in the task spec"):
        load_user_task(spec(latin, good))
    _, train, _ = load_user_task(spec(latin, good, encoding="latin-1"))
    assert train["text"][0] == "un film très réussi"
    with pytest.raises(LookupError, match="no-such-codec"):
        load_user_task(spec(latin, good, encoding="no-such-codec"))
    cut = tmp_path / "cut.csv"  # a multi-byte character cut off at the end of the file
    cut.write_bytes("text,label\nthé,0\n".encode()[:-4])
    with pytest.raises(ValueError, match=r"is not utf-8 text \(byte 0xc3 at offset 13, line 2\)"):
        load_user_task(spec(cut, good))


def test_a_blank_label_cell_names_the_row(tmp_path, good):
    blank = tmp_path / "blank.csv"
    blank.write_text("text,label\ngood,1\nbad,0\nfine,\nok,1\n")
    with pytest.raises(ValueError, match=r"column 'label': row 2 has no label \(a blank cell"):
        load_user_task(spec(blank, good))


@pytest.mark.parametrize(("labels", "extra", "missing"), [([0, 1, 0, 1], {"num_labels": 5}, "[2, 3, 4]"),
                                                          ([1, 2, 1, 2], {}, "[0]"),
                                                          (["pos", "pos"], {"label_names": ["neg", "pos"]},
                                                           "['neg']")])
def test_declared_classes_that_never_occur_in_training_are_warned_about(labels, extra, missing, tmp_path, good,
                                                                       caplog):
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": [f"text {i}" for i in range(len(labels))], "label": labels}).to_csv(train, index=False)
    with caplog.at_level(logging.WARNING, logger="hf_mtl.data.user_files"):
        load_user_task(spec(train, good, **extra))
    assert f"never occur in the training data: {missing}" in caplog.text


def test_every_class_present_gives_no_warning(tmp_path, good, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_mtl.data.user_files"):
        load_user_task(spec(good, good))
    assert "never occur" not in caplog.text
