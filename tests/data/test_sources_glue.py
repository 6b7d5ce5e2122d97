"""GLUE by name, read from local files with GLUE's hub schema (tests cannot reach the hub)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import datasets.config
import huggingface_hub.constants
import pandas as pd
import pytest

from hf_mtl.data.glue import GLUE_HUB_ID, GLUE_TASKS
from hf_mtl.data.sources import load_task_data
from hf_mtl.tasks import TaskKind, TaskRole

MRPC_TRAIN = [
    {
        "sentence1": 'Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his evidence .',
        "sentence2": 'Referring to him as only " the witness " , Amrozi accused his brother of deliberately distorting his evidence .',
        "label": 1,
        "idx": 0,
    },
    {
        "sentence1": "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 billion .",
        "sentence2": "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion in 1998 .",
        "label": 0,
        "idx": 1,
    },
    {
        "sentence1": "They had published an advertisement on the Internet on June 10 , offering the cargo for sale .",
        "sentence2": "On June 10 , the ship 's owners had published an advertisement on the Internet , offering the explosives for sale .",
        "label": 1,
        "idx": 2,
    },
]
MRPC_VALIDATION = [
    {
        "sentence1": "He said the foodservice pie business doesn 't fit the company 's long-term growth strategy .",
        "sentence2": '" The foodservice pie business does not fit our long-term growth strategy .',
        "label": 1,
        "idx": 0,
    },
    {
        "sentence1": "Magnarelli said Racicot hated the Iraqi regime and looked forward to using his long years of training in the war .",
        "sentence2": 'His wife said he was " 100 percent behind George Bush " and looked forward to using his years of training in the war .',
        "label": 0,
        "idx": 1,
    },
]
SST2_ROWS = [
    {"sentence": "hide new secretions from the parental units ", "label": 0, "idx": 0},
    {"sentence": "contains no wit , only labored gags ", "label": 0, "idx": 1},
    {
        "sentence": "that loves its characters and communicates something rather beautiful about human nature ",
        "label": 1,
        "idx": 2,
    },
    {"sentence": "it 's a charming and often affecting journey . ", "label": 1, "idx": 3},
]
STSB_ROWS = [
    {
        "sentence1": "A plane is taking off.",
        "sentence2": "An air plane is taking off.",
        "label": 5.0,
        "idx": 0,
    },
    {
        "sentence1": "A man is playing a large flute.",
        "sentence2": "A man is playing a flute.",
        "label": 3.8,
        "idx": 1,
    },
    {"sentence1": "A man is smoking.", "sentence2": "A man is skating.", "label": 0.5, "idx": 2},
]
MNLI_ROWS = [
    {
        "premise": "Conceptually cream skimming has two basic dimensions - product and geography.",
        "hypothesis": "Product and geography are what make cream skimming work. ",
        "label": 1,
        "idx": 0,
    },
    {
        "premise": "you know during the season and i guess at at your level uh you lose them to the next level",
        "hypothesis": "You lose the things to the following level if the people recall.",
        "label": 0,
        "idx": 1,
    },
    {
        "premise": "One of our number will carry out your instructions minutely.",
        "hypothesis": "A member of my team will execute your orders with immense precision.",
        "label": 2,
        "idx": 2,
    },
]


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_pair_task_from_hub_layout_directory(tmp_path):
    _write_parquet(tmp_path / "mrpc" / "train-00000-of-00001.parquet", MRPC_TRAIN)
    _write_parquet(tmp_path / "mrpc" / "validation-00000-of-00001.parquet", MRPC_VALIDATION)
    data = load_task_data("mrpc", data_dir=tmp_path)
    assert data.task.kind is TaskKind.SENTENCE_PAIR_CLASSIFICATION
    assert data.task.label_names == ["not_equivalent", "equivalent"]
    assert data.task.metrics == ["f1", "accuracy"]
    assert data.train.column_names == ["text", "text_pair", "label"]
    assert data.train.num_rows == 3 and data.validation.num_rows == 2
    assert data.train[1] == {
        "text": MRPC_TRAIN[1]["sentence1"],
        "text_pair": MRPC_TRAIN[1]["sentence2"],
        "label": 0,
    }
    assert list(data.validation["label"]) == [1, 0]


def test_single_sentence_task_from_data_files(tmp_path):
    train = _write_parquet(tmp_path / "sst2_train.parquet", SST2_ROWS)
    validation = _write_parquet(tmp_path / "sst2_dev.parquet", SST2_ROWS[:2])
    data = load_task_data("sst2", data_files={"train": str(train), "validation": str(validation)})
    assert data.task.kind is TaskKind.SINGLE_SENTENCE_CLASSIFICATION
    assert data.train.column_names == ["text", "label"]
    assert list(data.train["text"]) == [row["sentence"] for row in SST2_ROWS]
    assert list(data.train["label"]) == [0, 0, 1, 1]


def test_label_names_in_csv_are_mapped(tmp_path):
    named = [{**row, "label": ["negative", "positive"][row["label"]]} for row in SST2_ROWS]
    pd.DataFrame(named).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(named[2:]).to_csv(tmp_path / "validation.csv", index=False)
    data = load_task_data("sst2", data_dir=tmp_path)
    assert list(data.train["label"]) == [0, 0, 1, 1] and list(data.validation["label"]) == [1, 1]
    named[3]["label"] = "neutral"
    pd.DataFrame(named).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(
        ValueError, match=r"Task 'sst2', split 'train', column 'label': unknown label 'neutral' at row 3"
    ):
        load_task_data("sst2", data_dir=tmp_path)


def test_stsb_regression_keeps_pair_and_float_scores(tmp_path):
    train = _write_jsonl(tmp_path / "train.jsonl", STSB_ROWS)
    validation = _write_jsonl(tmp_path / "validation.jsonl", STSB_ROWS[:2])
    data = load_task_data("stsb", data_files={"train": str(train), "validation": str(validation)})
    assert data.task.kind is TaskKind.REGRESSION and data.task.num_labels == 1
    assert data.task.metrics == ["pearson", "spearmanr"]
    assert data.train.column_names == ["text", "text_pair", "label"]
    assert data.train.features["label"] == datasets.Value("float32")
    assert list(data.train["label"]) == pytest.approx([5.0, 3.8, 0.5])


def test_mnli_validates_on_matched_split(tmp_path):
    _write_parquet(tmp_path / "mnli" / "train-00000-of-00001.parquet", MNLI_ROWS)
    _write_parquet(tmp_path / "mnli" / "validation_matched-00000-of-00001.parquet", MNLI_ROWS[:1])
    _write_parquet(tmp_path / "mnli" / "validation_mismatched-00000-of-00001.parquet", MNLI_ROWS[1:])
    data = load_task_data("mnli", data_dir=tmp_path)
    assert data.task.label_names == ["entailment", "neutral", "contradiction"]
    assert list(data.validation["text"]) == [MNLI_ROWS[0]["premise"]]
    assert list(data.validation["text_pair"]) == [MNLI_ROWS[0]["hypothesis"]]


def test_glue_spec_dict_with_local_files_and_role(tmp_path):
    rows = [{**row, "label": 1 - row["label"]} for row in MRPC_TRAIN]  # RTE's class 0 is entailment
    train = _write_parquet(tmp_path / "train.parquet", rows)
    spec = {"name": "rte", "role": "auxiliary", "data_files": {"train": str(train), "validation": str(train)}}
    data = load_task_data(spec, max_train_samples=2)
    assert data.task.role is TaskRole.AUXILIARY and data.task.label_names == ["entailment", "not_entailment"]
    assert data.train.num_rows == 2 and data.validation.num_rows == 3


def test_every_glue_task_maps_to_a_valid_task():
    for name, glue in GLUE_TASKS.items():
        task = glue.make_task(name)
        assert task.name == name
        assert (task.kind is TaskKind.REGRESSION) == (name == "stsb")
        assert (glue.text_pair_column is None) == (name in ("cola", "sst2"))


def test_missing_glue_column_names_column_and_lists_present(tmp_path):
    rows = [{"text": row["sentence"], "label": row["label"]} for row in SST2_ROWS]
    train = _write_parquet(tmp_path / "train.parquet", rows)
    with pytest.raises(
        ValueError,
        match=r"Task 'sst2', split 'train': missing column 'sentence'; columns present: \['text', 'label'\]",
    ):
        load_task_data("sst2", data_files={"train": str(train), "validation": str(train)})


def test_out_of_range_glue_label_names_row(tmp_path):
    rows = [dict(row) for row in SST2_ROWS]
    rows[2]["label"] = 2
    train = _write_parquet(tmp_path / "train.parquet", rows)
    with pytest.raises(
        ValueError, match=r"Task 'sst2', split 'train', column 'label': label 2 at row 2 is outside \[0, 2\)"
    ):
        load_task_data("sst2", data_files={"train": str(train), "validation": str(train)})


def test_local_file_problems_are_named(tmp_path):
    train = _write_parquet(tmp_path / "train.parquet", SST2_ROWS)
    with pytest.raises(ValueError, match=r"data_files has no 'validation' entry"):
        load_task_data("sst2", data_files={"train": str(train)})
    with pytest.raises(ValueError, match=r"unknown data_files keys \['dev'\]"):
        load_task_data("sst2", data_files={"train": str(train), "validation": str(train), "dev": str(train)})
    with pytest.raises(FileNotFoundError, match=r"no 'validation' file in"):
        load_task_data("sst2", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        load_task_data(
            "sst2", data_files={"train": str(train), "validation": str(tmp_path / "missing.parquet")}
        )
    with pytest.raises(ValueError, match=r"cannot tell the format of .*\.xlsx"):
        load_task_data("sst2", data_files={"train": str(train), "validation": str(tmp_path / "dev.xlsx")})


def test_without_local_files_glue_loads_from_the_hub(monkeypatch):
    """The default branch asks the hub for nyu-mll/glue; offline that fails fast with a hint."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        ConnectionError,
        match=rf"GLUE task 'qnli' loads from the Hugging Face Hub \('{GLUE_HUB_ID}'\).*data_dir",
    ):
        load_task_data("qnli")
