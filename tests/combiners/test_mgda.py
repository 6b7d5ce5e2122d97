"""MGDA: golden value, exactness against an independent NNLS reference, non-conflict, variants, normalisation.

Su 2022 (II) = Su Jianlin 2022, "多任务学习漫谈（二）：行梯度之事" ("Multi-task learning notes II: gradients"),
blog post, https://kexue.fm/archives/8896.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_mtl.combiners import get_combiner

from .reference import gram_of, largest_norm, mgda_reference, random_jacobian, relative_error

EXACT_VARIANTS = ["frank_wolfe", "active_set"]


@pytest.mark.parametrize("variant", EXACT_VARIANTS)
def test_golden_value(variant):
    jacobian = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    weights = get_combiner("mgda", variant=variant)(jacobian @ jacobian.T)
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, torch.tensor([0.6, 0.4]), rtol=0, atol=1e-6)


def test_two_tasks_closed_form():
    """For two gradients the optimum is the foot of the triangle's height (Su 2022 (II))."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        g1, g2 = rng.standard_normal((2, 5))
        gamma = np.clip((g2 - g1) @ g2 / ((g2 - g1) @ (g2 - g1)), 0.0, 1.0)
        weights = get_combiner("mgda")(gram_of(np.stack([g1, g2]))).numpy()
        np.testing.assert_allclose(weights, [gamma, 1.0 - gamma], atol=1e-12)


@pytest.mark.parametrize("variant", EXACT_VARIANTS)
def test_matches_exact_reference_up_to_64_tasks(variant):
    rng = np.random.default_rng(1)
    combiner = get_combiner("mgda", variant=variant)
    for trial in range(60):
        num_tasks = int(rng.choice([2, 3, 4, 8, 16, 32, 64])) if trial >= 6 else [2, 3, 8, 16, 32, 64][trial]
        dim = int(rng.integers(1, 2 * num_tasks + 3))  # rank-deficient (0 in the hull) and full-rank systems
        jacobian = random_jacobian(rng, num_tasks, dim, spread=2.0)
        weights = combiner(gram_of(jacobian)).numpy()
        reference = mgda_reference(jacobian)
        u, u_ref = weights @ jacobian, reference @ jacobian
        floor = 1e-12 * largest_norm(jacobian) ** 2
        assert weights.min() >= 0.0 and abs(weights.sum() - 1.0) < 1e-12
        assert relative_error(u @ u, u_ref @ u_ref, floor) < 1e-6, (num_tasks, dim)
        # ||u - u*||² ≤ ||u||² - ||u*||² for the projection of 0 on a convex set: u itself is accurate.
        assert np.linalg.norm(u - u_ref) <= 1e-5 * np.linalg.norm(u_ref) + 1e-8 * largest_norm(jacobian)
        # MGDA's guarantee: <u, g_i> ≥ ||u||² for every task (no task's loss rises to first order).
        assert np.min(jacobian @ u) >= u @ u - 1e-9 * largest_norm(jacobian) ** 2
        assert combiner.last_info["converged"]


def test_frank_wolfe_reports_iterations_and_gap():
    rng = np.random.default_rng(2)
    combiner = get_combiner("mgda", tol=1e-12)
    combiner(gram_of(random_jacobian(rng, 16, 40)))
    info = combiner.last_info
    assert info["converged"] and info["iterations"] >= 1 and 0.0 <= info["duality_gap"] <= 1e-10


def test_max_iter_caps_the_solver():
    rng = np.random.default_rng(3)
    gram = gram_of(random_jacobian(rng, 32, 64))
    capped = get_combiner("mgda", max_iter=1)
    weights = capped(gram)
    assert capped.last_info["iterations"] == 1 and not capped.last_info["converged"]
    assert torch.isfinite(weights).all() and abs(float(weights.sum()) - 1.0) < 1e-12


@pytest.mark.parametrize(("variant", "max_iter", "tolerance"), [("averaged", 20000, 2e-3), ("softmax", 20000, 2e-3)])
def test_inexact_variants_approach_the_optimum(variant, max_iter, tolerance):
    """Su 2022 (II)'s averaged iteration and the softmax parameterisation converge, slowly (no exactness promise)."""
    rng = np.random.default_rng(4)
    for _ in range(3):
        jacobian = random_jacobian(rng, 6, 10, spread=0.5)
        reference = mgda_reference(jacobian) @ jacobian
        combiner = get_combiner("mgda", variant=variant, max_iter=max_iter, tol=1e-6)
        u = combiner(gram_of(jacobian)).numpy() @ jacobian
        assert abs(u @ u - reference @ reference) <= tolerance * largest_norm(jacobian) ** 2
        assert combiner.last_info["iterations"] >= 1


def test_averaged_is_the_running_mean_of_chosen_vertices():
    """Article 001 eq. 12: every weight is a multiple of 1/(t+1) (uniform start + t vertices)."""
    rng = np.random.default_rng(5)
    combiner = get_combiner("mgda", variant="averaged", max_iter=9, tol=0.0)
    weights = combiner(gram_of(random_jacobian(rng, 3, 4))).numpy()
    steps = combiner.last_info["iterations"]
    assert steps == 9
    counts = (weights - 1.0 / 3.0 / (steps + 1)) * (steps + 1)
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)


@given(
    num_tasks=st.integers(2, 12),
    dim=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
    log_scale=st.floats(-15.0, 15.0),
)
@settings(max_examples=60, deadline=None)
def test_u_is_linear_under_global_scaling_and_permutation_equivariant(num_tasks, dim, seed, log_scale):
    rng = np.random.default_rng(seed)
    jacobian = random_jacobian(rng, num_tasks, dim)
    combiner = get_combiner("mgda")
    u = combiner(gram_of(jacobian)).numpy() @ jacobian
    scale = 10.0**log_scale
    u_scaled = combiner(gram_of(scale * jacobian)).numpy() @ (scale * jacobian)
    tolerance = 1e-7 * largest_norm(jacobian)
    np.testing.assert_allclose(u_scaled / scale, u, atol=tolerance)
    order = rng.permutation(num_tasks)
    u_permuted = combiner(gram_of(jacobian[order])).numpy() @ jacobian[order]
    np.testing.assert_allclose(u_permuted, u, atol=tolerance)


def test_l2_normalisation_folds_the_scaling_into_the_weights():
    rng = np.random.default_rng(6)
    jacobian = random_jacobian(rng, 5, 8, spread=3.0)
    norms = np.linalg.norm(jacobian, axis=1)
    weights = get_combiner("mgda", normalization="l2")(gram_of(jacobian)).numpy()
    alpha = get_combiner("mgda")(gram_of(jacobian / norms[:, None])).numpy()
    np.testing.assert_allclose(weights, alpha / norms, rtol=1e-9)
    # invariant to rescaling any single task (the normalised gradients do not change)
    rescaled = jacobian * np.array([1e3, 1.0, 1e-2, 5.0, 1.0])[:, None]
    u = weights @ jacobian
    u_rescaled = get_combiner("mgda", normalization="l2")(gram_of(rescaled)).numpy() @ rescaled
    np.testing.assert_allclose(u_rescaled, u, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("normalization", ["loss", "loss+"])
def test_loss_normalisations(normalization):
    rng = np.random.default_rng(7)
    jacobian = random_jacobian(rng, 4, 6)
    losses = np.array([0.5, 2.0, 1.0, 3.0])
    norms = np.linalg.norm(jacobian, axis=1)
    divisor = losses if normalization == "loss" else losses * norms
    combiner = get_combiner("mgda", normalization=normalization)
    assert combiner.needs_losses
    weights = combiner(gram_of(jacobian), losses=torch.tensor(losses)).numpy()
    alpha = get_combiner("mgda")(gram_of(jacobian / divisor[:, None])).numpy()
    np.testing.assert_allclose(weights, alpha / divisor, rtol=1e-9)
    with pytest.raises(ValueError, match="needs the"):
        combiner(gram_of(jacobian))
    with pytest.raises(ValueError, match="task index 2 has loss 0.0"):
        combiner(gram_of(jacobian), losses=torch.tensor([1.0, 1.0, 0.0, 1.0]))


def test_zero_gradient_gives_zero_update():
    """0 is in the hull: MGDA's answer is u = 0 (Pareto-stationary), with finite weights in every mode."""
    jacobian = np.array([[1.0, 2.0], [0.0, 0.0], [-3.0, 1.0]])
    for normalization in ["none", "l2"]:
        weights = get_combiner("mgda", normalization=normalization)(gram_of(jacobian)).numpy()
        assert np.all(np.isfinite(weights))
        np.testing.assert_allclose(weights @ jacobian, 0.0, atol=1e-12)


def test_zero_gram_gives_uniform_weights():
    weights = get_combiner("mgda")(torch.zeros(3, 3))
    torch.testing.assert_close(weights, torch.full((3,), 1.0 / 3.0))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"variant": "nope"}, "unknown variant"),
        ({"normalization": "l1"}, "unknown normalization"),
        ({"tol": -1.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        get_combiner("mgda", **options)
