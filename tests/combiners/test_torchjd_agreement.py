"""Agreement with TorchJD 0.18.0 (the dev extra pins it) where it implements the same method: same J (K×P), compare
the update vectors. CAGrad and Nash-MTL in TorchJD need cvxpy (skipped when it is not installed)."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch

from hf_mtl.combiners import get_combiner

from .reference import random_jacobian

aggregation = pytest.importorskip("torchjd.aggregation")
needs_cvxpy = pytest.mark.skipif(importlib.util.find_spec("cvxpy") is None, reason="TorchJD's solver needs cvxpy")
SHAPES = [(2, 3), (2, 7), (3, 5), (4, 9), (6, 15), (8, 19)]


def systems(seed: int, repeats: int = 3):
    rng = np.random.default_rng(seed)
    for num_tasks, dim in SHAPES:
        for _ in range(repeats):
            yield random_jacobian(rng, num_tasks, dim)


def ours(name: str, jacobian: np.ndarray, **options) -> np.ndarray:
    return get_combiner(name, **options)(torch.as_tensor(jacobian @ jacobian.T)).numpy() @ jacobian


def theirs(aggregator, jacobian: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return aggregator(torch.as_tensor(jacobian)).numpy()


def relative(u: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(u - reference) / np.linalg.norm(reference))


def test_mgda_golden_value_and_vectors():
    jacobian = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    weights = aggregation.MGDAWeighting()(torch.as_tensor(jacobian @ jacobian.T)).numpy()
    np.testing.assert_allclose(weights, [0.6, 0.4], atol=1e-6)
    np.testing.assert_allclose(ours("mgda", jacobian), theirs(aggregation.MGDA(), jacobian), atol=1e-6)
    errors = []
    for jacobian in systems(0):
        u, reference = ours("mgda", jacobian), theirs(aggregation.MGDA(epsilon=1e-12, max_iters=3000), jacobian)
        assert u @ u <= reference @ reference * (1 + 1e-12)  # never a longer min-norm vector than TorchJD's
        errors.append(relative(u, reference))
    # TorchJD's plain Frank–Wolfe converges sublinearly (error ~1/iterations): after 3000 iterations a few cases
    # are still up to ~1e-2 away from the optimum; most agree to rounding.
    assert np.median(errors) < 1e-10 and max(errors) < 3e-2


@pytest.mark.parametrize(
    ("name", "make", "tolerance"),
    [
        ("imtl_g", lambda: aggregation.IMTLG(), 1e-10),
        ("aligned_mtl", lambda: aggregation.AlignedMTL(), 1e-10),
        ("upgrad", lambda: aggregation.UPGrad(projector=aggregation_projector(0.0)), 1e-9),
        ("upgrad", lambda: aggregation.UPGrad(), 2e-3),  # TorchJD adds 1e-4·I to the normalised Gram
    ],
)
def test_closed_form_and_qp_methods(name, make, tolerance):
    for jacobian in systems(1):
        assert relative(ours(name, jacobian), theirs(make(), jacobian)) < tolerance


def aggregation_projector(reg_eps: float):
    from torchjd.linalg import QuadprogProjector

    return QuadprogProjector(reg_eps=reg_eps)


def test_pcgrad_two_tasks_and_conflict_free():
    """TorchJD permutes with torch's global RNG: compare where the order cannot matter."""
    rng = np.random.default_rng(2)
    for _ in range(30):
        jacobian = rng.standard_normal((2, 5))
        np.testing.assert_allclose(ours("pcgrad", jacobian), theirs(aggregation.PCGrad(), jacobian), rtol=1e-12)
    agreeing = np.abs(rng.standard_normal((5, 6)))  # all inner products ≥ 0: no projection, the plain sum
    np.testing.assert_allclose(ours("pcgrad", agreeing), theirs(aggregation.PCGrad(), agreeing), rtol=1e-12)


@needs_cvxpy
@pytest.mark.parametrize("c", [0.2, 0.5, 1.0])
def test_cagrad(c):
    for jacobian in systems(3, repeats=2):
        u, reference = ours("cagrad", jacobian, c=c, rescale=0), theirs(aggregation.CAGrad(c=c), jacobian)
        assert relative(u, reference) < 1e-3
        # the primal objective min_k <g_k, d>: ours is at least as good (Clarabel stops at its tolerance)
        assert np.min(jacobian @ u) >= np.min(jacobian @ reference) - 1e-9 * np.abs(reference).max() ** 2


@needs_cvxpy
def test_nash_mtl_direction():
    """TorchJD runs the authors' sequence of cvxpy problems on G/||G||_F and stops early; compare directions
    where its weights solve the bargaining equation up to scale (α ⊙ Gα constant)."""
    compared = 0
    for jacobian in systems(4):
        num_tasks = jacobian.shape[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            alpha = aggregation.NashMTL(n_tasks=num_tasks, max_norm=0.0, optim_niter=100).weighting(
                torch.as_tensor(jacobian)
            ).numpy()
        balance = alpha * (jacobian @ jacobian.T @ alpha)
        if np.ptp(balance) > 1e-3 * balance.mean():
            continue
        reference = alpha @ jacobian
        u = ours("nash_mtl", jacobian, max_norm=0.0)
        np.testing.assert_allclose(u / np.linalg.norm(u), reference / np.linalg.norm(reference), atol=1e-5)
        compared += 1
    assert compared >= len(SHAPES) * 3 - 3
