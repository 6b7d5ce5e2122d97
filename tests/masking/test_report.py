"""MaskingTally: examples recognised by content through any collator; rates per kind of corruption."""

from __future__ import annotations

import pytest
import torch

from hf_mtl.data import MultiTaskCollator
from hf_mtl.masking import MaskingTally, MaskRecord, dataset_keys, example_keys

from .helpers import SOURCES, TARGETS, sentiment_dataset, seq2seq_collator, seq2seq_dataset


def test_keys_of_collated_batches_match_the_dataset_rows(tokenizer):
    pairs = seq2seq_dataset(tokenizer, SOURCES[:4], TARGETS[:4])
    batch = seq2seq_collator(tokenizer)([pairs[i] for i in (2, 0, 3)])
    assert example_keys(batch) == [dataset_keys(pairs)[i] for i in (2, 0, 3)]
    reviews = sentiment_dataset(tokenizer, 5)
    collated = MultiTaskCollator(tokenizer, ["sentiment"])([{**reviews[i], "__task__": "sentiment"} for i in (4, 1)])
    assert example_keys(collated) == [dataset_keys(reviews)[i] for i in (4, 1)]


def test_tally_counts_masked_decisions_per_kind(tokenizer):
    pairs = seq2seq_dataset(tokenizer, SOURCES[:4], TARGETS[:4])
    tally = MaskingTally.from_dataset(pairs, ["intact", "misaligned", "intact", "copied"])
    collate = seq2seq_collator(tokenizer)
    tally(collate([pairs[i] for i in range(4)]), MaskRecord(0, torch.zeros(4), torch.tensor([True, False, False, False])))
    tally(collate([pairs[1], pairs[0]]), MaskRecord(1, torch.zeros(2), torch.tensor([True, True])))
    report = tally.report()
    assert report["masked_rate_misaligned"] == pytest.approx(1 / 2) and report["masked_rate_copied"] == 1.0
    assert report["masked_rate_corrupted"] == pytest.approx(2 / 3)
    assert report["masked_rate_intact"] == pytest.approx(1 / 3)
    assert (report["decisions_intact"], report["decisions_misaligned"], report["decisions_unknown"]) == (3, 2, 0)


def test_ambiguous_and_unseen_examples_count_as_unknown(tokenizer):
    reviews = sentiment_dataset(tokenizer, 3)
    twice = [reviews[0], reviews[0], reviews[1]]
    tally = MaskingTally.from_dataset(twice, ["flipped", "intact", "intact"])  # row 0 has both kinds
    batch = MultiTaskCollator(tokenizer, ["sentiment"])([{**r, "__task__": "sentiment"} for r in reviews])
    tally(batch, MaskRecord(0, torch.zeros(3), torch.tensor([False, False, True])))
    report = tally.report()
    assert report["decisions_unknown"] == 2 and report["decisions_intact"] == 1
    assert report["masked_rate_intact"] == 1.0 and report["masked_rate_corrupted"] is None
    with pytest.raises(ValueError, match="the batch has 3 examples but the mask 2"):
        tally(batch, MaskRecord(0, torch.zeros(2), torch.ones(2, dtype=torch.bool)))
