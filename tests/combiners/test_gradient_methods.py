"""Gram-based methods beyond MGDA: each checked against its defining property or an independent vector-space
implementation (normalized, PCGrad, IMTL-G, Aligned-MTL, CAGrad, UPGrad, Nash-MTL)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize, nnls

from hf_mtl.combiners import get_combiner

from .reference import gram_of, largest_norm, random_jacobian

SCALE_FREE_WEIGHTS = ["pcgrad", "imtl_g", "aligned_mtl", "cagrad", "upgrad", "mgda", "primary_auxiliary"]


def weights_of(name: str, jacobian: np.ndarray, **options) -> np.ndarray:
    return get_combiner(name, **options)(gram_of(jacobian)).numpy()


# --- normalized ------------------------------------------------------------------------------------------------
def test_normalized_is_inverse_norm_and_invariant_to_task_scaling():
    rng = np.random.default_rng(0)
    jacobian = random_jacobian(rng, 5, 7, spread=3.0)
    weights = weights_of("normalized", jacobian)
    np.testing.assert_allclose(weights, 1.0 / np.linalg.norm(jacobian, axis=1), rtol=1e-12)
    rescaled = jacobian * np.array([1e-4, 1.0, 30.0, 2.0, 1e5])[:, None]
    np.testing.assert_allclose(weights_of("normalized", rescaled) @ rescaled, weights @ jacobian, rtol=1e-9)


@given(seed=st.integers(0, 2**32 - 1), dim=st.integers(1, 8))
@settings(max_examples=50, deadline=None)
def test_normalized_two_tasks_never_conflict(seed, dim):
    jacobian = np.random.default_rng(seed).standard_normal((2, dim))
    u = weights_of("normalized", jacobian) @ jacobian
    assert np.min(jacobian @ u) >= -1e-12 * largest_norm(jacobian)


def test_normalized_zero_gradient_gets_zero_weight():
    jacobian = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_array_equal(weights_of("normalized", jacobian), [0.2, 0.0])


# --- PCGrad ----------------------------------------------------------------------------------------------------
def pcgrad_on_vectors(jacobian: np.ndarray, seed: int, steps: int) -> list[np.ndarray]:
    """Algorithm 1 of Yu et al. on the gradients themselves, drawing the same orders as the combiner."""
    generator = np.random.default_rng(seed)
    results = []
    num_tasks = jacobian.shape[0]
    for _ in range(steps):
        projected = []
        for task in range(num_tasks):
            vector = jacobian[task].copy()
            for other in generator.permutation(np.delete(np.arange(num_tasks), task)):
                product = vector @ jacobian[other]
                if product < 0.0:
                    vector -= product / (jacobian[other] @ jacobian[other]) * jacobian[other]
            projected.append(vector)
        results.append(np.sum(projected, axis=0))
    return results


def test_pcgrad_equals_surgery_on_the_vectors():
    rng = np.random.default_rng(1)
    jacobian = random_jacobian(rng, 6, 5)  # dim < K: many conflicts
    combiner = get_combiner("pcgrad", seed=7)
    expected = pcgrad_on_vectors(jacobian, seed=7, steps=3)
    for step in range(3):
        u = combiner(gram_of(jacobian)).numpy() @ jacobian
        np.testing.assert_allclose(u, expected[step], rtol=1e-10, atol=1e-12)
    assert combiner.last_info["projections"] > 0


def test_pcgrad_two_tasks_closed_form_and_mean_reduction():
    g1, g2 = np.array([1.0, 0.0]), np.array([-1.0, 1.0])
    jacobian = np.stack([g1, g2])
    projected_1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    projected_2 = g2 - (g1 @ g2) / (g1 @ g1) * g1
    u = weights_of("pcgrad", jacobian) @ jacobian
    np.testing.assert_allclose(u, projected_1 + projected_2, atol=1e-15)
    assert np.min(jacobian @ u) >= 0.0
    np.testing.assert_allclose(weights_of("pcgrad", jacobian, reduction="mean") @ jacobian, u / 2, atol=1e-15)
    with pytest.raises(ValueError, match="reduction"):
        get_combiner("pcgrad", reduction="max")


def test_pcgrad_order_depends_on_the_seed():
    rng = np.random.default_rng(2)
    jacobian = random_jacobian(rng, 5, 3)
    draws = {tuple(np.round(weights_of("pcgrad", jacobian, seed=seed), 12)) for seed in range(6)}
    assert len(draws) > 1


# --- IMTL-G ----------------------------------------------------------------------------------------------------
def test_imtl_g_projects_equally_on_every_unit_gradient():
    rng = np.random.default_rng(3)
    for num_tasks, dim in [(2, 3), (4, 10), (8, 8), (6, 30)]:
        jacobian = random_jacobian(rng, num_tasks, dim, spread=2.0)
        weights = weights_of("imtl_g", jacobian)
        u = weights @ jacobian
        projections = jacobian @ u / np.linalg.norm(jacobian, axis=1)
        np.testing.assert_allclose(projections, projections[0], rtol=1e-7)
        assert projections[0] > 0.0 and abs(weights.sum() - 1.0) < 1e-12


def test_imtl_g_direction_is_invariant_to_task_scaling():
    rng = np.random.default_rng(4)
    jacobian = random_jacobian(rng, 4, 9)
    rescaled = jacobian * np.array([10.0, 0.1, 1.0, 3.0])[:, None]
    u = weights_of("imtl_g", jacobian) @ jacobian
    v = weights_of("imtl_g", rescaled) @ rescaled
    np.testing.assert_allclose(v / np.linalg.norm(v), u / np.linalg.norm(u), atol=1e-9)


def test_imtl_g_opposite_gradients_give_no_direction():
    jacobian = np.array([[1.0, 2.0], [-1.0, -2.0]])
    np.testing.assert_array_equal(weights_of("imtl_g", jacobian), [0.0, 0.0])


# --- Aligned-MTL -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
def test_aligned_mtl_aligned_gradients_are_orthogonal_with_equal_norms(scale_mode):
    rng = np.random.default_rng(5)
    jacobian = random_jacobian(rng, 5, 12, spread=2.0)
    gram = jacobian @ jacobian.T
    eigenvalues = np.linalg.eigvalsh(gram)
    sigma = {"min": eigenvalues.min(), "median": np.median(eigenvalues), "rmse": eigenvalues.mean()}[scale_mode]
    # w = B p is linear in p: the unit preferences recover B, and B G B must be σ I.
    balance = np.stack(
        [weights_of("aligned_mtl", jacobian, scale_mode=scale_mode, preferences=np.eye(5)[k]) for k in range(5)], axis=1
    )
    np.testing.assert_allclose(balance @ gram @ balance, sigma * np.eye(5), atol=1e-9 * sigma)
    default = weights_of("aligned_mtl", jacobian, scale_mode=scale_mode)
    np.testing.assert_allclose(default, balance @ np.full(5, 0.2), rtol=1e-10)


def test_aligned_mtl_rank_deficient():
    rng = np.random.default_rng(6)
    jacobian = random_jacobian(rng, 6, 3)
    combiner = get_combiner("aligned_mtl")
    weights = combiner(gram_of(jacobian)).numpy()
    assert combiner.last_info["rank"] == 3 and np.all(np.isfinite(weights))


# --- CAGrad ----------------------------------------------------------------------------------------------------
def cagrad_dual_value(jacobian: np.ndarray, c: float) -> float:
    """The dual optimum min_{w∈Δ} <g_w, g_0> + c||g_0||·||g_w|| by SLSQP (as the authors' code), independent."""
    num_tasks = jacobian.shape[0]
    mean = jacobian.mean(axis=0)
    radius = c * np.linalg.norm(mean)

    def objective(w):
        g_w = w @ jacobian
        return g_w @ mean + radius * np.sqrt(g_w @ g_w + 1e-20)

    best = np.inf
    for start in [np.full(num_tasks, 1.0 / num_tasks), *np.eye(num_tasks)]:
        result = minimize(objective, start, method="SLSQP", bounds=[(0.0, 1.0)] * num_tasks,
                          constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
                          options={"ftol": 1e-15, "maxiter": 1000})
        best = min(best, result.fun)
    return float(best)


@pytest.mark.parametrize("c", [0.1, 0.4, 0.9, 2.0])
def test_cagrad_is_primal_dual_optimal(c):
    """min_i <g_i, d> ≤ dual value for every feasible d; equality certifies that d is optimal."""
    rng = np.random.default_rng(7)
    for num_tasks, dim in [(2, 4), (3, 5), (5, 12), (8, 20)]:
        jacobian = random_jacobian(rng, num_tasks, dim)
        d = weights_of("cagrad", jacobian, c=c, rescale=0) @ jacobian
        mean = jacobian.mean(axis=0)
        assert np.linalg.norm(d - mean) <= c * np.linalg.norm(mean) * (1 + 1e-9)
        primal = np.min(jacobian @ d)
        dual = cagrad_dual_value(jacobian, c)
        scale = largest_norm(jacobian) ** 2
        assert primal <= dual + 1e-9 * scale
        assert primal >= dual - 1e-6 * scale, (num_tasks, primal, dual)
        assert primal >= np.min(jacobian @ mean) - 1e-12 * scale  # never worse than the average gradient


def test_cagrad_support_closed_form_matches_the_bracketing_search(monkeypatch):
    """The closed form on the NNLS support and the Brent safeguard find the same optimum."""
    from hf_mtl.combiners import cagrad

    rng = np.random.default_rng(13)
    systems = [random_jacobian(rng, k, p, spread=1.5) for k, p in [(2, 3), (3, 2), (5, 9), (8, 4), (16, 40), (32, 20)]]
    fast = [weights_of("cagrad", j, c=0.5, rescale=0) for j in systems]
    monkeypatch.setattr(cagrad, "MAX_SUPPORT_ROUNDS", 0)
    for jacobian, weights in zip(systems, fast, strict=True):
        slow = weights_of("cagrad", jacobian, c=0.5, rescale=0)
        np.testing.assert_allclose(weights @ jacobian, slow @ jacobian, atol=1e-8 * largest_norm(jacobian))


def test_cagrad_rescale_and_c_zero():
    rng = np.random.default_rng(8)
    jacobian = random_jacobian(rng, 4, 6)
    plain = weights_of("cagrad", jacobian, c=0.5, rescale=0)
    np.testing.assert_allclose(weights_of("cagrad", jacobian, c=0.5, rescale=1), plain / 1.25, rtol=1e-12)
    np.testing.assert_allclose(weights_of("cagrad", jacobian, c=0.5, rescale=2), plain / 1.5, rtol=1e-12)
    np.testing.assert_allclose(weights_of("cagrad", jacobian, c=0.0, rescale=0), np.full(4, 0.25), rtol=1e-12)
    with pytest.raises(ValueError, match="rescale"):
        get_combiner("cagrad", rescale=3)


# --- UPGrad ----------------------------------------------------------------------------------------------------
def test_upgrad_equals_mean_of_dual_cone_projections_on_the_vectors():
    rng = np.random.default_rng(9)
    for num_tasks, dim in [(2, 3), (4, 3), (6, 20), (10, 5)]:
        jacobian = random_jacobian(rng, num_tasks, dim, spread=1.5)
        projections = []
        for task in range(num_tasks):  # projection of g_i on {x: Jx ≥ 0} = g_i + Jᵀy, y = nnls(Jᵀ, -g_i)
            lift, _ = nnls(jacobian.T, -jacobian[task], maxiter=1000)
            projections.append(jacobian[task] + lift @ jacobian)
        expected = np.mean(projections, axis=0)
        weights = weights_of("upgrad", jacobian)
        u = weights @ jacobian
        np.testing.assert_allclose(u, expected, atol=1e-8 * largest_norm(jacobian))
        assert np.min(jacobian @ u) >= -1e-9 * largest_norm(jacobian) ** 2
        assert np.all(weights >= 1.0 / num_tasks - 1e-12)


# --- Nash-MTL --------------------------------------------------------------------------------------------------
def test_nash_mtl_solves_the_bargaining_equation():
    rng = np.random.default_rng(10)
    for num_tasks, dim in [(2, 3), (3, 10), (8, 40), (16, 64)]:
        jacobian = random_jacobian(rng, num_tasks, dim, spread=2.0)
        combiner = get_combiner("nash_mtl", max_norm=0.0)
        alpha = combiner(gram_of(jacobian)).numpy()
        gram = jacobian @ jacobian.T
        np.testing.assert_allclose(alpha * (gram @ alpha), 1.0, atol=1e-8)
        assert combiner.last_info["converged"] and np.all(alpha > 0)
        u = alpha @ jacobian
        np.testing.assert_allclose(u @ u, num_tasks, rtol=1e-8)


def test_nash_mtl_is_invariant_to_task_scaling_and_caps_the_norm():
    rng = np.random.default_rng(11)
    jacobian = random_jacobian(rng, 4, 10)
    rescaled = jacobian * np.array([100.0, 0.01, 1.0, 7.0])[:, None]
    u = weights_of("nash_mtl", jacobian, max_norm=0.0) @ jacobian
    np.testing.assert_allclose(weights_of("nash_mtl", rescaled, max_norm=0.0) @ rescaled, u, rtol=1e-8)
    capped = weights_of("nash_mtl", jacobian, max_norm=0.5) @ jacobian
    np.testing.assert_allclose(capped, u * 0.5 / np.linalg.norm(u), rtol=1e-10)


def test_nash_mtl_degenerate_cases():
    g, h = np.array([1.0, 2.0, 0.0]), np.array([0.0, 1.0, 1.0])
    combiner = get_combiner("nash_mtl", max_norm=0.0)
    np.testing.assert_array_equal(combiner(gram_of(np.stack([g, -g]))).numpy(), [0.0, 0.0])
    assert combiner.last_info["pareto_stationary"]
    alpha = combiner(gram_of(np.stack([g, np.zeros(3), h]))).numpy()
    reference = combiner(gram_of(np.stack([g, h]))).numpy()
    np.testing.assert_allclose(alpha[[0, 2]], reference, rtol=1e-12)
    assert alpha[1] == 0.0


# --- scale behaviour shared by the Gram methods ------------------------------------------------------------------
@pytest.mark.parametrize("name", SCALE_FREE_WEIGHTS)
@given(seed=st.integers(0, 2**32 - 1), log_scale=st.floats(-12.0, 12.0))
@settings(max_examples=15, deadline=None)
def test_weights_invariant_to_global_gradient_scale(name, seed, log_scale):
    """u is linear in a global rescaling of the gradients (the weights do not change)."""
    rng = np.random.default_rng(seed)
    jacobian = random_jacobian(rng, 4, 6)
    scale = 10.0**log_scale
    u = weights_of(name, jacobian) @ jacobian
    u_scaled = weights_of(name, scale * jacobian) @ jacobian
    np.testing.assert_allclose(u_scaled, u, atol=1e-7 * largest_norm(jacobian))


@pytest.mark.parametrize("name", ["imtl_g", "aligned_mtl", "cagrad", "upgrad", "nash_mtl", "normalized", "mgda"])
def test_permutation_equivariance(name):
    rng = np.random.default_rng(12)
    for _ in range(5):
        jacobian = random_jacobian(rng, 5, 8)
        order = rng.permutation(5)
        u = weights_of(name, jacobian) @ jacobian
        u_permuted = weights_of(name, jacobian[order]) @ jacobian[order]
        np.testing.assert_allclose(u_permuted, u, atol=1e-8 * largest_norm(jacobian))


def test_unknown_options_values():
    with pytest.raises(ValueError, match="scale_mode"):
        get_combiner("aligned_mtl", scale_mode="max")
    with pytest.raises(ValueError, match="preferences"):
        get_combiner("upgrad", preferences=[1.0, 2.0])(torch.eye(3))
    with pytest.raises(ValueError, match="max_norm"):
        get_combiner("nash_mtl", max_norm=-1.0)
    with pytest.raises(ValueError, match="c must be"):
        get_combiner("cagrad", c=-0.1)
