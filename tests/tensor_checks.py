"""Tensor comparisons for results that are equal in exact arithmetic but summed in another order.

Two DDP ranks sum their halves of a batch and then each other's partial sums; one process sums the whole
batch: float32 rounding differs, and Adam's ``g / (|g| + eps)`` amplifies it where a gradient is near zero.
An elementwise ``rtol/atol`` check then fails on entries that are rounding noise (attention key biases,
whose gradient vanishes by softmax invariance, differ by O(1) of their own size), so these checks compare a
whole tensor by its norm instead, with a floor for tensors that are themselves rounding noise.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


def assert_close_by_norm(actual: torch.Tensor, expected: torch.Tensor, name: str, rtol: float = 1e-4,
                         atol: float = 1e-6) -> None:
    """``‖a − b‖ ≤ max(rtol · max(‖a‖, ‖b‖), atol · √numel)``: ``atol`` bounds the root-mean-square difference
    of tensors near zero. The failure message names the tensor and gives the sizes."""
    a, b = actual.detach().double(), expected.detach().double()
    assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    difference = (a - b).norm().item()
    scale = max(a.norm().item(), b.norm().item())
    bound = max(rtol * scale, atol * a.numel() ** 0.5)
    assert difference <= bound, (
        f"{name}: ‖a − b‖ = {difference:.3e} > {bound:.3e} (‖a − b‖ / max(‖a‖, ‖b‖) = "
        f"{difference / scale if scale else float('inf'):.3e}, rtol {rtol:g}, atol {atol:g}; "
        f"largest entry difference {(a - b).abs().max().item():.3e}, largest entry {a.abs().max().item():.3e})")


def assert_same_parameters(actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], label: str = "",
                           rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """Every tensor of two state dicts agrees by :func:`assert_close_by_norm` (the same keys in both)."""
    assert actual.keys() == expected.keys(), f"{label}: keys differ: {sorted(set(actual) ^ set(expected))}"
    for key in expected:
        assert_close_by_norm(actual[key], expected[key], f"{label}: {key}" if label else key, rtol, atol)


def assert_same_state(actual: object, expected: object, path: str = "state", rtol: float = 1e-5,
                      atol: float = 1e-7) -> None:
    """Two combiner ``state_dict()`` trees agree: numbers and arrays within tolerance, everything else equal."""
    if isinstance(expected, Mapping):
        assert isinstance(actual, Mapping) and actual.keys() == expected.keys(), f"{path}: {actual!r} != {expected!r}"
        for key in expected:
            assert_same_state(actual[key], expected[key], f"{path}.{key}", rtol, atol)
    elif isinstance(expected, (list, tuple)) and any(isinstance(e, (Mapping, list, tuple)) or e is None
                                                     for e in expected):
        assert len(actual) == len(expected), f"{path}: {len(actual)} != {len(expected)} entries"
        for i, (a, b) in enumerate(zip(actual, expected, strict=True)):
            assert_same_state(a, b, f"{path}[{i}]", rtol, atol)
    elif isinstance(expected, (list, tuple, np.ndarray, torch.Tensor, float, int)) and not isinstance(expected, bool):
        np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                                   rtol=rtol, atol=atol, err_msg=path)
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
