"""Keep rules: threshold on the alignment, keep fraction of the best aligned, non-finite alignments dropped."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_mtl.masking import keep_fraction_mask, keep_mask, threshold_mask

alignments_strategy = st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(values=alignments_strategy, threshold=st.floats(-10, 10))
def test_threshold_keeps_exactly_the_examples_at_or_above_it(values, threshold):
    alignments = torch.tensor(values)
    mask = threshold_mask(alignments, threshold)
    assert mask.tolist() == [v >= threshold for v in alignments.tolist()]


@settings(max_examples=60, deadline=None)
@given(values=alignments_strategy, fraction=st.floats(0.01, 1.0))
def test_keep_fraction_keeps_the_best_aligned_ceil_fraction(values, fraction):
    alignments = torch.tensor(values)
    mask = keep_fraction_mask(alignments, fraction)
    count = math.ceil(fraction * len(values) - 1e-9)
    assert int(mask.sum()) == count
    if 0 < count < len(values):
        assert float(alignments[mask].min()) >= float(alignments[~mask].max())


def test_ties_go_to_the_earlier_example_and_sign_does_not_matter():
    alignments = torch.tensor([-1.0, -2.0, -1.0, -1.0])
    assert keep_fraction_mask(alignments, 0.5).tolist() == [True, False, True, False]
    assert threshold_mask(alignments).tolist() == [False] * 4


def test_zero_alignment_is_kept_by_the_default_threshold():
    assert threshold_mask(torch.tensor([0.0, -0.0, -1e-30])).tolist() == [True, True, False]


def test_non_finite_alignments_are_always_dropped():
    alignments = torch.tensor([float("nan"), 1.0, float("inf"), -float("inf"), 0.5])
    assert threshold_mask(alignments).tolist() == [False, True, False, False, True]
    assert keep_fraction_mask(alignments, 1.0).tolist() == [False, True, False, False, True]


def test_keep_mask_dispatches_on_keep_fraction():
    alignments = torch.tensor([3.0, -1.0, 2.0, -4.0])
    assert keep_mask(alignments).tolist() == [True, False, True, False]
    assert keep_mask(alignments, keep_fraction=0.25).tolist() == [True, False, False, False]
    assert keep_mask(alignments, threshold=2.5).tolist() == [True, False, False, False]


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_bad_keep_fraction_is_named(fraction):
    with pytest.raises(ValueError, match="keep fraction must lie in"):
        keep_fraction_mask(torch.zeros(3), fraction)


def test_bad_shapes_and_thresholds_are_named():
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        threshold_mask(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        keep_fraction_mask(torch.zeros(2, 2), 0.5)
    with pytest.raises(ValueError, match="threshold must be finite"):
        threshold_mask(torch.zeros(2), float("inf"))
