"""The public contract, checked for every registered combiner: registry, shapes, device/dtype, input errors,
degenerate Gram matrices (finite weights or a clear ValueError, never NaN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_mtl.combiners import Combiner, available_combiners, get_combiner

ALL = available_combiners()
GRADIENT = [name for name in ALL if get_combiner(name).needs_gradients]
LOSS_BASED = [name for name in ALL if not get_combiner(name).needs_gradients]


def call(combiner: Combiner, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Pass what the trainer would pass: no Gram matrix to loss-based combiners."""
    return combiner(gram if combiner.needs_gradients else None, losses=losses)


def test_registry_lists_every_method():
    expected = {
        "linear", "normalized", "mgda", "primary_auxiliary", "uncertainty", "gradnorm", "pcgrad", "cagrad",
        "imtl_g", "nash_mtl", "upgrad", "aligned_mtl", "dwa", "famo", "rlw",
    }
    assert set(ALL) == expected
    assert ALL == sorted(ALL)


def test_unknown_name_lists_the_names():
    with pytest.raises(ValueError, match="Unknown combiner 'nope'.*mgda.*upgrad"):
        get_combiner("nope")


@pytest.mark.parametrize("name", ALL)
def test_unknown_option_is_a_value_error(name):
    with pytest.raises(ValueError, match="bad options"):
        get_combiner(name, not_an_option=1)


@pytest.mark.parametrize("name", ALL)
def test_class_attributes(name):
    combiner = get_combiner(name)
    assert combiner.name == name
    assert isinstance(combiner.needs_gradients, bool) and isinstance(combiner.needs_losses, bool)
    assert combiner.stateful == bool(combiner.state_dict())
    if not combiner.stateful:
        with pytest.raises(ValueError, match="stateless"):
            combiner.load_state_dict({"x": 1})


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_weights_shape_dtype_device(name, dtype):
    torch.manual_seed(0)
    jacobian = torch.randn(4, 9)
    gram = (jacobian @ jacobian.T).to(dtype)
    losses = (torch.rand(4) + 0.5).to(dtype)
    combiner = get_combiner(name)
    weights = call(combiner, gram, losses)
    assert weights.shape == (4,) and weights.dtype == dtype and weights.device == gram.device
    assert torch.isfinite(weights).all()
    assert isinstance(combiner.last_info, dict)


def plain(value) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    return isinstance(value, list) and all(plain(v) for v in value)


@pytest.mark.parametrize("name", ALL)
def test_last_info_holds_plain_values(name):
    """Diagnostics are for logging: plain Python values only (no NumPy scalars, no tensors)."""
    jacobian = torch.randn(5, 8, dtype=torch.float64)
    combiner = get_combiner(name)
    for _ in range(2):
        call(combiner, jacobian @ jacobian.T, torch.rand(5, dtype=torch.float64) + 0.5)
        assert all(plain(v) for v in combiner.last_info.values()), combiner.last_info
    assert repr(combiner).startswith(type(combiner).__name__ + "(")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", ALL)
def test_gram_on_gpu(name):
    jacobian = torch.randn(3, 7, device="cuda")
    weights = call(get_combiner(name), jacobian @ jacobian.T, torch.rand(3, device="cuda") + 0.5)
    assert weights.device.type == "cuda" and weights.dtype == torch.float32


@pytest.mark.parametrize("name", GRADIENT)
def test_gradient_combiners_need_the_gram(name):
    with pytest.raises(ValueError, match="Gram matrix"):
        get_combiner(name)(None, losses=torch.ones(3))


@pytest.mark.parametrize("name", ALL)
def test_every_combiner_accepts_losses_and_a_gram(name):
    jacobian = torch.randn(3, 5)
    weights = get_combiner(name)(jacobian @ jacobian.T, losses=torch.tensor([0.3, 1.0, 2.0]))
    assert weights.shape == (3,)


@pytest.mark.parametrize("name", GRADIENT)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_gram_names_the_task(name, bad):
    gram = torch.eye(4)
    gram[2, 1] = gram[1, 2] = bad
    with pytest.raises(ValueError, match="task index 1"):
        get_combiner(name)(gram, losses=torch.ones(4))


@pytest.mark.parametrize("name", ALL)
def test_non_finite_loss_names_the_task(name):
    combiner = get_combiner(name)
    losses = torch.tensor([1.0, 2.0, float("nan")])
    with pytest.raises(ValueError, match="task index 2"):
        combiner(torch.eye(3) if combiner.needs_gradients else None, losses=losses)


@pytest.mark.parametrize("name", GRADIENT)
def test_malformed_gram(name):
    combiner = get_combiner(name)
    with pytest.raises(ValueError, match="square"):
        combiner(torch.ones(2, 3), losses=torch.ones(2))
    with pytest.raises(ValueError, match="square"):
        combiner(torch.ones(3), losses=torch.ones(3))
    with pytest.raises(ValueError, match="diagonal entry 1"):
        combiner(torch.diag(torch.tensor([1.0, -1.0])), losses=torch.ones(2))
    with pytest.raises(ValueError, match="not symmetric"):
        combiner(torch.tensor([[1.0, 0.5], [-0.5, 1.0]]), losses=torch.ones(2))
    with pytest.raises(ValueError, match="shape"):
        combiner(torch.eye(3), losses=torch.ones(2))


def degenerate_jacobians() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    g = rng.standard_normal(6)
    h = rng.standard_normal(6)
    return {
        "zero_row": np.stack([g, np.zeros(6), h]),
        "all_zero": np.zeros((3, 6)),
        "duplicate": np.stack([g, g, h]),
        "opposite": np.stack([g, -g]),
        "opposite_and_third": np.stack([g, -g, h]),
        "rank_one": np.outer([1.0, 2.0, -0.5, 3.0], g),
        "rank_one_same_sign": np.outer([1.0, 2.0, 0.5], g),
        "more_tasks_than_dims": rng.standard_normal((8, 2)),
        "tiny_and_huge": np.stack([1e-8 * g, 1e8 * h, g]),
        "single_task": g[None, :],
    }


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("case", list(degenerate_jacobians()))
@pytest.mark.parametrize("scale", [1e-30, 1e-8, 1.0, 1e8, 1e30])
def test_degenerate_grams_give_finite_weights(name, case, scale):
    """``scale`` multiplies the Gram matrix (float64): entries from ~1e-30 to ~1e30."""
    jacobian = degenerate_jacobians()[case]
    gram = torch.as_tensor(scale * (jacobian @ jacobian.T))
    losses = torch.linspace(0.5, 1.5, jacobian.shape[0], dtype=torch.float64)
    combiner = get_combiner(name)
    weights = call(combiner, gram, losses)
    assert torch.isfinite(weights).all(), (name, case, scale, weights)
    weights = call(combiner, gram, losses)  # a second step (stateful combiners update their state)
    assert torch.isfinite(weights).all(), (name, case, scale, weights)


@given(
    name=st.sampled_from(GRADIENT),
    entries=st.lists(st.floats(-1e3, 1e3), min_size=4, max_size=40),
    num_tasks=st.integers(1, 6),
    log_scale=st.floats(-30.0, 30.0),
)
@settings(max_examples=150, deadline=None)
def test_random_gram_matrices_never_give_nan(name, entries, num_tasks, log_scale):
    """Any Gram matrix (from arbitrary vectors, at any scale): finite weights or a clear ValueError."""
    dim = max(1, len(entries) // num_tasks)
    values = np.resize(np.asarray(entries), num_tasks * dim).reshape(num_tasks, dim)
    gram = torch.as_tensor((values @ values.T) * 10.0**log_scale)
    try:
        weights = get_combiner(name)(gram, losses=torch.ones(num_tasks, dtype=torch.float64))
    except ValueError as error:
        assert "task" in str(error) or "gram" in str(error).lower()
        return
    assert torch.isfinite(weights).all()


def test_float32_gram_from_large_gradients():
    """A float32 Gram matrix of big vectors is symmetric only up to rounding: accepted."""
    torch.manual_seed(0)
    jacobian = torch.randn(5, 200_000)
    gram = jacobian @ jacobian.T
    for name in GRADIENT:
        assert torch.isfinite(get_combiner(name)(gram, losses=torch.ones(5))).all()
