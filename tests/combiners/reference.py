"""Random gradient systems and independent reference solvers that work on the gradients J (K×P) themselves."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import nnls


def random_jacobian(rng: np.random.Generator, num_tasks: int, dim: int, spread: float = 1.0) -> np.ndarray:
    """K gradients in R^P with a shared component (so they often agree) and per-task scales e^[-spread, spread]."""
    scales = np.exp(rng.uniform(-spread, spread, size=(num_tasks, 1)))
    shared = rng.standard_normal(dim) * rng.uniform(0.0, 2.0)
    return (rng.standard_normal((num_tasks, dim)) + shared) * scales


def gram_of(jacobian: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.as_tensor(jacobian @ jacobian.T, dtype=dtype)


def largest_norm(jacobian: np.ndarray) -> float:
    return float(np.sqrt(np.max(np.sum(jacobian**2, axis=1))))


def mixed_reference(jacobian: np.ndarray, main: np.ndarray) -> np.ndarray:
    """min ||Σ x_i g_i|| with x ≥ 0 and Σ_main x = 1: NNLS with a heavily weighted row enforcing the sum.

    The weight 1e6·max||g|| makes the sum constraint hold to ~1e-12 relative, independent of the solver under test
    (which homogenises the problem on the Gram matrix instead).
    """
    num_tasks, dim = jacobian.shape
    weight = 1e6 * largest_norm(jacobian)
    matrix = np.vstack([jacobian.T, weight * main.astype(np.float64)[None, :]])
    target = np.zeros(dim + 1)
    target[-1] = weight
    solution, _ = nnls(matrix, target, maxiter=100 * num_tasks)
    return solution / solution[main].sum()


def mgda_reference(jacobian: np.ndarray) -> np.ndarray:
    return mixed_reference(jacobian, np.ones(jacobian.shape[0], dtype=bool))


def primary_auxiliary_reference(jacobian: np.ndarray, main: int) -> np.ndarray:
    """min_{λ ≥ 0} ||g_main + Σ λ_j g_j||: plain NNLS on the gradients (exact)."""
    others = [i for i in range(jacobian.shape[0]) if i != main]
    weights = np.zeros(jacobian.shape[0])
    weights[main] = 1.0
    if others:
        weights[others], _ = nnls(jacobian[others].T, -jacobian[main], maxiter=100 * len(others))
    return weights


def relative_error(value: float, reference: float, floor: float) -> float:
    return abs(value - reference) / max(abs(reference), floor)
