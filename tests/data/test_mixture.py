"""Sampling rates, per-batch quotas and the every-task batch sampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_mtl.data import MultiTaskBatchSampler, batch_quotas, sampling_rates


def test_rates_for_each_strategy():
    sizes = [100, 400, 1600]
    np.testing.assert_allclose(sampling_rates(sizes, "proportional"), [100 / 2100, 400 / 2100, 1600 / 2100])
    np.testing.assert_allclose(sampling_rates(sizes, "uniform"), [1 / 3] * 3)
    t2 = np.sqrt(sizes) / np.sqrt(sizes).sum()
    np.testing.assert_allclose(sampling_rates(sizes, "temperature", temperature=2.0), t2)
    np.testing.assert_allclose(sampling_rates(sizes, "proportional", max_examples_per_task=400), [1 / 9, 4 / 9, 4 / 9])


def test_rates_reject_bad_input():
    with pytest.raises(ValueError, match="Unknown sampling strategy 'random'"):
        sampling_rates([1, 2], "random")
    with pytest.raises(ValueError, match="at least one example"):
        sampling_rates([0, 2])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sampling_rates([1, 2], "temperature", temperature=0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([1, 3, 10, 50, 400, 10_000]), min_size=1, max_size=8), st.integers(8, 256))
def test_quotas_fill_the_batch_with_every_task(sizes, batch_size):
    rates = sampling_rates(sizes)
    quotas = batch_quotas(rates, batch_size)
    assert sum(quotas) == batch_size
    assert min(quotas) >= 1
    # within one example of the exact share, except for the slots the one-example floor takes away
    target = rates * batch_size
    floored = int(((target < 1)).sum())
    for q, t in zip(quotas, target, strict=True):
        assert q <= max(1, np.ceil(t - 1e-9))
        assert q >= np.floor(t + 1e-9) - floored - 1e-9
    if floored == 0:
        assert np.all(np.abs(np.array(quotas) - target) < 1 + 1e-9)


def test_batch_too_small_for_tasks():
    with pytest.raises(ValueError, match="smaller than the number of tasks"):
        batch_quotas([0.5, 0.3, 0.2], 2)


def test_sampler_proportions_and_every_task_in_every_batch():
    sizes = [60, 240, 900]
    sampler = MultiTaskBatchSampler(sizes, batch_size=20, strategy="proportional", seed=3)
    counts = Counter()
    offsets = [0, 60, 300]
    for batch in sampler:
        tasks = [int(np.searchsorted(np.cumsum(sizes), i, side="right")) for i in batch]
        assert set(tasks) == {0, 1, 2}
        counts.update(tasks)
        assert all(0 <= i < sum(sizes) for i in batch)
    total = sum(counts.values())
    assert len(sampler) == 60
    observed = np.array([counts[k] for k in range(3)]) / total
    np.testing.assert_allclose(observed, np.array(sizes) / sum(sizes), atol=0.03)
    assert offsets == sampler.offsets


def test_sampler_is_deterministic_per_epoch_and_reshuffles():
    sampler = MultiTaskBatchSampler([10, 30], batch_size=8, seed=0)
    first = list(sampler)
    assert first == list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_small_task_cycles_through_all_its_examples():
    sampler = MultiTaskBatchSampler([5, 500], batch_size=10, strategy="uniform", seed=0)
    seen = [i for batch in sampler for i in batch if i < 5]
    assert set(seen) == set(range(5))
    counts = Counter(seen)
    assert max(counts.values()) - min(counts.values()) <= 1
