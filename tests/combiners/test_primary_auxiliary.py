"""Primary/auxiliary: closed form, exactness (single and mixed) against NNLS references, guarantees, reductions.

Su 2022 (III) = Su Jianlin 2022, "多任务学习漫谈（三）：分主次之序" ("Multi-task learning notes III: primary and
auxiliary"), blog post, https://kexue.fm/archives/8907 (equation numbers are the post's).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_mtl.combiners import get_combiner

from .reference import (
    gram_of,
    largest_norm,
    mgda_reference,
    mixed_reference,
    primary_auxiliary_reference,
    random_jacobian,
    relative_error,
)


def check_against(weights: np.ndarray, reference: np.ndarray, jacobian: np.ndarray) -> None:
    u, u_ref = weights @ jacobian, reference @ jacobian
    scale = largest_norm(jacobian)
    assert relative_error(u @ u, u_ref @ u_ref, 1e-12 * scale**2) < 1e-6
    assert np.linalg.norm(u - u_ref) <= 1e-5 * np.linalg.norm(u_ref) + 1e-8 * scale


def test_one_auxiliary_closed_form():
    """λ = relu(-<g0, g1>)/||g1||² (Su 2022 (III) eq. 7), whichever index is main."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        jacobian = rng.standard_normal((2, 4))
        for main in (0, 1):
            combiner = get_combiner("primary_auxiliary", primary=[main])
            weights = combiner(gram_of(jacobian)).numpy()
            g_main, g_aux = jacobian[main], jacobian[1 - main]
            expected = max(0.0, -(g_main @ g_aux)) / (g_aux @ g_aux)
            assert weights[main] == 1.0
            np.testing.assert_allclose(weights[1 - main], expected, rtol=1e-12, atol=1e-15)
            assert combiner.last_info["solver"] == "closed_form"


def test_no_conflict_means_plain_gradient_descent_on_the_main_task():
    jacobian = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.0, 2.0]])
    weights = get_combiner("primary_auxiliary")(gram_of(jacobian)).numpy()
    np.testing.assert_array_equal(weights, [1.0, 0.0, 0.0])


@pytest.mark.parametrize("solver", ["auto", "active_set"])
def test_single_main_matches_nnls_up_to_64_tasks(solver):
    rng = np.random.default_rng(1)
    for trial in range(50):
        num_tasks = [2, 3, 8, 16, 32, 64][trial] if trial < 6 else int(rng.choice([2, 4, 8, 16, 32, 64]))
        dim = int(rng.integers(1, 2 * num_tasks + 3))
        jacobian = random_jacobian(rng, num_tasks, dim, spread=2.0)
        main = int(rng.integers(num_tasks))
        weights = get_combiner("primary_auxiliary", primary=[main], solver=solver)(gram_of(jacobian)).numpy()
        check_against(weights, primary_auxiliary_reference(jacobian, main), jacobian)
        u = weights @ jacobian
        auxiliary = np.delete(np.arange(num_tasks), main)
        assert weights[main] == 1.0 and np.all(weights >= 0.0)
        # the auxiliaries must not rise: <u, g_aux> ≥ 0; complementary slackness λ_j <u, g_j> = 0
        assert np.min(jacobian[auxiliary] @ u) >= -1e-9 * largest_norm(jacobian) ** 2
        assert np.max(np.abs(weights[auxiliary] * (jacobian[auxiliary] @ u))) <= 1e-8 * largest_norm(jacobian) ** 2


def test_mixed_matches_reference_and_guarantees():
    rng = np.random.default_rng(2)
    for trial in range(50):
        num_tasks = [3, 8, 16, 32, 64][trial] if trial < 5 else int(rng.choice([3, 4, 8, 16, 32, 64]))
        dim = int(rng.integers(1, 2 * num_tasks + 3))
        jacobian = random_jacobian(rng, num_tasks, dim, spread=2.0)
        num_main = int(rng.integers(2, num_tasks + 1))
        main_indices = rng.choice(num_tasks, size=num_main, replace=False)
        main = np.zeros(num_tasks, dtype=bool)
        main[main_indices] = True
        combiner = get_combiner("primary_auxiliary", primary=main_indices.tolist())
        weights = combiner(gram_of(jacobian)).numpy()
        check_against(weights, mixed_reference(jacobian, main), jacobian)
        u = weights @ jacobian
        tolerance = 1e-9 * largest_norm(jacobian) ** 2
        assert abs(weights[main].sum() - 1.0) < 1e-12 and np.all(weights >= 0.0)
        assert np.min(jacobian[main] @ u) >= u @ u - tolerance  # main tasks: MGDA's guarantee
        if (~main).any():
            assert np.min(jacobian[~main] @ u) >= -tolerance  # auxiliaries do not rise


def test_without_auxiliary_it_is_mgda():
    rng = np.random.default_rng(3)
    for num_tasks in (2, 5, 12):
        jacobian = random_jacobian(rng, num_tasks, 7)
        everyone = list(range(num_tasks))
        weights = get_combiner("primary_auxiliary", primary=everyone)(gram_of(jacobian)).numpy()
        mgda = get_combiner("mgda")(gram_of(jacobian)).numpy()
        np.testing.assert_allclose(weights @ jacobian, mgda @ jacobian, atol=1e-9 * largest_norm(jacobian))
        check_against(weights, mgda_reference(jacobian), jacobian)


def test_mixed_with_one_main_is_primary_auxiliary():
    rng = np.random.default_rng(4)
    jacobian = random_jacobian(rng, 6, 4)
    mixed = get_combiner("primary_auxiliary", primary=[2], solver="active_set")(gram_of(jacobian)).numpy()
    closed = primary_auxiliary_reference(jacobian, 2)
    np.testing.assert_allclose(mixed @ jacobian, closed @ jacobian, atol=1e-9 * largest_norm(jacobian))


def test_coordinate_iteration_converges_to_the_optimum():
    """Su 2022 (III)'s coordinate iteration (with the KKT-violation rule) on well-conditioned systems."""
    rng = np.random.default_rng(5)
    for num_tasks in (3, 5, 8, 16):
        jacobian = random_jacobian(rng, num_tasks, 3 * num_tasks, spread=0.5)
        combiner = get_combiner("primary_auxiliary", primary=[0], solver="coordinate", tol=1e-12)
        weights = combiner(gram_of(jacobian)).numpy()
        assert combiner.last_info["converged"], combiner.last_info
        check_against(weights, primary_auxiliary_reference(jacobian, 0), jacobian)


def test_coordinate_rule_also_lowers_multipliers():
    """Su 2022 (III)'s rule τ = argmin_i <g_i, u> stalls here once every <g_i, u> ≥ 0, short of the optimum;
    choosing the largest KKT violation (which may lower a λ) reaches it."""
    jacobian = np.array([[1.3, 0.9], [-0.7, -1.3], [-0.6, 0.0]])
    gram = jacobian @ jacobian.T
    argmin_rule = np.array([1.0, 0.0, 0.0])
    for _ in range(200):
        products = gram @ argmin_rule
        tau = 1 + int(np.argmin(products[1:]))
        argmin_rule[tau] = max(0.0, argmin_rule[tau] - products[tau] / gram[tau, tau])
    reference = primary_auxiliary_reference(jacobian, 0)
    stalled = argmin_rule @ jacobian
    # <g_j, u> is exactly 0 for the last coordinate updated; in floats, within rounding of |<g_j, u>| ≤
    # max_i ‖g_i‖² · Σ|λ_i| (observed: -2.7e-17).
    products = jacobian[1:] @ stalled
    tolerance = 1e-12 * np.max(np.sum(jacobian**2, axis=1)) * np.abs(argmin_rule).sum()
    assert np.min(products) >= -tolerance, f"<g_aux, u> = {products}, tolerance {tolerance:.1e}"
    assert stalled @ stalled > 0.1, f"‖u‖² = {stalled @ stalled}"  # optimum: u = 0
    combiner = get_combiner("primary_auxiliary", primary=[0], solver="coordinate")
    weights = combiner(gram_of(jacobian)).numpy()
    assert combiner.last_info["converged"]
    check_against(weights, reference, jacobian)


def test_zero_auxiliary_gradient_gets_zero_weight():
    jacobian = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]])
    for solver in ("auto", "coordinate"):
        weights = get_combiner("primary_auxiliary", solver=solver)(gram_of(jacobian)).numpy()
        assert weights[1] == 0.0 and np.all(np.isfinite(weights))


def test_bad_primary_indices():
    with pytest.raises(ValueError, match="at least one"):
        get_combiner("primary_auxiliary", primary=[])
    with pytest.raises(ValueError, match="distinct"):
        get_combiner("primary_auxiliary", primary=[1, 1])
    with pytest.raises(ValueError, match="one main task"):
        get_combiner("primary_auxiliary", primary=[0, 1], solver="coordinate")
    with pytest.raises(ValueError, match="index 3 out of range for 3 tasks"):
        get_combiner("primary_auxiliary", primary=[3])(torch.eye(3))
