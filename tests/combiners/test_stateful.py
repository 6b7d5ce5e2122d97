"""Stateful combiners resume exactly: save → torch.save/torch.load (weights_only) → load → continue gives the same
weights as running without stopping."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from hf_mtl.combiners import available_combiners, get_combiner

STATEFUL = [name for name in available_combiners() if get_combiner(name).stateful]
OPTIONS = {"pcgrad": {"seed": 5}, "rlw": {"seed": 5}, "dwa": {"period": 2}, "uncertainty": {"lr": 0.3}}


def steps(count: int, num_tasks: int = 4):
    rng = np.random.default_rng(0)
    for step in range(count):
        jacobian = rng.standard_normal((num_tasks, 3))
        losses = np.exp(-0.05 * step * rng.uniform(0.5, 1.5, num_tasks)) * rng.uniform(0.8, 1.2, num_tasks)
        yield torch.as_tensor(jacobian @ jacobian.T), torch.as_tensor(losses)


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_the_stateful_ones():
    assert set(STATEFUL) == {"pcgrad", "rlw", "uncertainty", "gradnorm", "dwa", "famo"}


@pytest.mark.parametrize("name", STATEFUL)
@pytest.mark.parametrize("stop", [0, 1, 5])
def test_resume_is_exact(name, stop):
    options = OPTIONS.get(name, {})
    reference = get_combiner(name, **options)
    expected = [reference(gram, losses=losses) for gram, losses in steps(12)]

    first = get_combiner(name, **options)
    sequence = list(steps(12))
    for gram, losses in sequence[:stop]:
        first(gram, losses=losses)
    state = roundtrip(first.state_dict())
    resumed = get_combiner(name, **options)
    resumed.load_state_dict(state)
    for (gram, losses), weights in zip(sequence[stop:], expected[stop:], strict=True):
        torch.testing.assert_close(resumed(gram, losses=losses), weights, rtol=0, atol=0)


@pytest.mark.parametrize("name", STATEFUL)
def test_state_changes_the_next_weights(name):
    """The state matters: a fresh combiner fed the same step answers differently at some step (a resume that
    dropped the state would be caught)."""
    options = OPTIONS.get(name, {})
    running = get_combiner(name, **options)
    differs = False
    for gram, losses in steps(8, num_tasks=6):
        continued = running(gram, losses=losses)
        fresh = get_combiner(name, **options)(gram, losses=losses)
        differs |= not torch.equal(continued, fresh)
    assert differs
