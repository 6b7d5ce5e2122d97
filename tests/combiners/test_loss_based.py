"""Loss-based and adaptive-weight methods: uncertainty, GradNorm, DWA, FAMO, RLW — their update rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_mtl.combiners import get_combiner


def losses(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("name", ["uncertainty", "dwa", "famo", "rlw", "linear"])
def test_loss_based_flags(name):
    combiner = get_combiner(name)
    assert not combiner.needs_gradients
    weights = combiner(None, losses=losses(1.0, 2.0))
    assert weights.dtype == torch.float64 and weights.shape == (2,)


# --- uncertainty -----------------------------------------------------------------------------------------------
def test_uncertainty_gradient_step_on_the_log_variances():
    combiner = get_combiner("uncertainty", lr=0.1)
    first = combiner(None, losses=losses(2.0, 0.5)).numpy()
    np.testing.assert_array_equal(first, [1.0, 1.0])  # s = 0
    # ∂/∂s (e^{-s} L + s) = 1 - e^{-s} L → s = -0.1·(1 - L)
    expected_s = -0.1 * (1.0 - np.array([2.0, 0.5]))
    np.testing.assert_allclose(combiner.state_dict()["log_variances"], expected_s, rtol=1e-14)
    second = combiner(None, losses=losses(2.0, 0.5)).numpy()
    np.testing.assert_allclose(second, np.exp(-expected_s), rtol=1e-14)


def test_uncertainty_converges_to_inverse_loss_weights():
    combiner = get_combiner("uncertainty", lr=0.5)
    for _ in range(200):
        weights = combiner(None, losses=losses(4.0, 0.25, 1.0)).numpy()
    np.testing.assert_allclose(weights, [0.25, 4.0, 1.0], rtol=1e-6)


def test_uncertainty_step_is_clipped():
    combiner = get_combiner("uncertainty", lr=1.0, max_step=0.3)
    combiner(None, losses=losses(1e6, 1.0))
    np.testing.assert_allclose(combiner.state_dict()["log_variances"], [0.3, 0.0])


# --- GradNorm --------------------------------------------------------------------------------------------------
def test_gradnorm_one_step_by_hand():
    gram = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))  # ||g|| = (2, 1)
    combiner = get_combiner("gradnorm", alpha=1.0, lr=0.1)
    np.testing.assert_array_equal(combiner(gram, losses=losses(1.0, 1.0)).numpy(), [1.0, 1.0])
    # weighted norms (2, 1), mean 1.5, equal rates → targets 1.5; ∂/∂w = sign(+, -)·(2, 1); Adam's first step is
    # lr·sign: w = (0.9, 1.1), already summing to K = 2.
    np.testing.assert_allclose(combiner.last_info["next_weights"], [0.9, 1.1], rtol=1e-7)
    weights = combiner(gram, losses=losses(0.5, 1.0)).numpy()
    np.testing.assert_allclose(weights, [0.9, 1.1], rtol=1e-7)
    assert abs(weights.sum() - 2.0) < 1e-14


def test_gradnorm_balances_norms_and_favours_slow_tasks():
    gram = torch.diag(torch.tensor([100.0, 1.0, 1.0], dtype=torch.float64))
    combiner = get_combiner("gradnorm", alpha=1.5, lr=0.01)
    for step in range(400):
        # task 2's loss stalls while the others halve: it must end with the largest weighted gradient norm
        weights = combiner(gram, losses=losses(0.5 ** (step / 100), 0.5 ** (step / 100), 1.0)).numpy()
    weighted = weights * np.sqrt(np.diag(gram.numpy()))
    assert weighted[2] > weighted[1] and abs(weights.sum() - 3.0) < 1e-12
    assert weights[0] < weights[1]  # the task with the 10× larger gradient gets the smaller weight


def test_gradnorm_needs_positive_initial_losses():
    with pytest.raises(ValueError, match="task index 1 has loss 0.0"):
        get_combiner("gradnorm")(torch.eye(2), losses=losses(1.0, 0.0))


# --- DWA -------------------------------------------------------------------------------------------------------
def test_dwa_softmax_of_loss_ratios():
    combiner = get_combiner("dwa", temperature=2.0)
    np.testing.assert_array_equal(combiner(None, losses=losses(1.0, 1.0, 1.0)).numpy(), [1, 1, 1])
    np.testing.assert_array_equal(combiner(None, losses=losses(0.5, 0.9, 1.0)).numpy(), [1, 1, 1])
    weights = combiner(None, losses=losses(0.4, 0.8, 1.0)).numpy()
    ratios = np.array([0.5, 0.9, 1.0])
    expected = 3 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()
    np.testing.assert_allclose(weights, expected, rtol=1e-14)
    assert weights.argmax() == 2  # the task whose loss did not fall gets the most weight


def test_dwa_window_averages():
    combiner = get_combiner("dwa", period=2)
    sequence = [(2.0, 1.0), (4.0, 1.0), (1.0, 1.0), (1.0, 1.0), (0.3, 0.3)]
    for values in sequence[:4]:
        np.testing.assert_array_equal(combiner(None, losses=losses(*values)).numpy(), [1.0, 1.0])
    weights = combiner(None, losses=losses(*sequence[4])).numpy()
    ratios = np.array([1.0 / 3.0, 1.0])  # window means (3, 1) then (1, 1)
    np.testing.assert_allclose(weights, 2 * np.exp(ratios / 2) / np.exp(ratios / 2).sum(), rtol=1e-14)


# --- FAMO ------------------------------------------------------------------------------------------------------
def test_famo_weights_and_first_logit_step():
    combiner = get_combiner("famo", w_lr=0.025, gamma=0.01)
    first = combiner(None, losses=losses(2.0, 1.0, 0.5)).numpy()
    inverse = 1.0 / (np.array([2.0, 1.0, 0.5]) + 1e-8)
    np.testing.assert_allclose(first, inverse / inverse.sum(), rtol=1e-12)  # z uniform at the start
    # task 0's loss drops much faster → its logit falls (Adam's first step is lr·sign of the gradient)
    combiner(None, losses=losses(0.5, 0.9, 0.45))
    logits = np.array(combiner.last_info["task_logits"])
    delta = np.log(np.array([2.0, 1.0, 0.5])) - np.log(np.array([0.5, 0.9, 0.45]))
    gradient = delta / 3 - (delta.mean()) / 3
    np.testing.assert_allclose(logits, -0.025 * np.sign(gradient), rtol=1e-6)
    assert logits[0] < 0 < logits[1]


def test_famo_rejects_losses_below_their_minimum():
    combiner = get_combiner("famo", min_losses=[0.0, 1.0])
    with pytest.raises(ValueError, match="task index 1 has loss 0.5 below its min_loss 1.0"):
        combiner(None, losses=losses(1.0, 0.5))


# --- RLW -------------------------------------------------------------------------------------------------------
def test_rlw_softmax_normal_weights_seeded():
    first = get_combiner("rlw", seed=3)
    second = get_combiner("rlw", seed=3)
    draws = [first(None, losses=losses(1.0, 1.0, 1.0, 1.0)).numpy() for _ in range(5)]
    for draw in draws:
        np.testing.assert_array_equal(draw, second(None, losses=losses(1.0, 1.0, 1.0, 1.0)).numpy())
        assert np.all(draw > 0) and abs(draw.sum() - 1.0) < 1e-12
    assert len({tuple(d) for d in draws}) == 5
    normal = np.random.default_rng(3).standard_normal(4)
    np.testing.assert_allclose(draws[0], np.exp(normal) / np.exp(normal).sum(), rtol=1e-12)


@pytest.mark.parametrize("name", ["uncertainty", "gradnorm", "dwa", "famo"])
def test_changing_the_number_of_tasks_is_an_error(name):
    combiner = get_combiner(name)
    combiner(torch.eye(3), losses=losses(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="holds state for 3 tasks but was called with 2"):
        combiner(torch.eye(2), losses=losses(1.0, 1.0))
