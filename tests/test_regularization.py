"""Tuning-free L2 (Su Jianlin 2022, "多任务学习漫谈（三）：分主次之序" ("Multi-task learning notes III: primary and
auxiliary"), https://kexue.fm/archives/8907, section "正则损失"): the correction on flat and per-tensor vectors,
edge cases, and its equivalence with the one-auxiliary primary/auxiliary combiner."""

from __future__ import annotations

import torch

from hf_mtl.combiners import get_combiner
from hf_mtl.regularization import apply_tuning_free_l2_


def make_parameters(seed: int = 0, dtype: torch.dtype = torch.float64) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (4,), (2, 2, 2)]
    params = [torch.nn.Parameter(torch.randn(s, generator=generator, dtype=dtype)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator, dtype=dtype)
    return params


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


def test_flat_formula_and_no_rise_of_the_norm():
    params = make_parameters()
    theta = flat(params)
    for p in params:  # make the gradient conflict with the decay task: <g, θ> < 0
        p.grad.add_(p.detach(), alpha=-2.0)
    grad = flat(p.grad for p in params)
    assert grad @ theta < 0
    coefficient = apply_tuning_free_l2_(params)
    expected = -(grad @ theta) / (theta @ theta)
    torch.testing.assert_close(coefficient, expected)
    new_grad = flat(p.grad for p in params)
    torch.testing.assert_close(new_grad, grad + expected * theta)
    assert abs(float(new_grad @ theta)) < 1e-12 * float(theta @ theta)


def test_no_conflict_leaves_the_gradient_alone():
    params = make_parameters(1)
    for p in params:
        p.grad = p.detach().clone()  # <g, θ> = ||θ||² > 0
    before = [p.grad.clone() for p in params]
    assert float(apply_tuning_free_l2_(params)) == 0.0
    for p, g in zip(params, before, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)


def test_matches_the_primary_auxiliary_combiner():
    params = make_parameters(2)
    for p in params:
        p.grad.add_(p.detach(), alpha=-1.5)
    grad, theta = flat(p.grad for p in params), flat(params)
    stacked = torch.stack([grad, theta])
    weights = get_combiner("primary_auxiliary", primary=[0])(stacked @ stacked.T)
    coefficient = apply_tuning_free_l2_(params)
    torch.testing.assert_close(weights, torch.stack([torch.tensor(1.0, dtype=torch.float64), coefficient]))


def test_per_tensor_mode():
    params = make_parameters(3)
    params[0].grad = -params[0].detach() * 3.0  # conflicts
    params[1].grad = params[1].detach().clone()  # agrees
    expected_first = 3.0
    before_second = params[1].grad.clone()
    coefficients = apply_tuning_free_l2_(params, per_tensor=True)
    assert coefficients.shape == (3,)
    torch.testing.assert_close(coefficients[0], torch.tensor(expected_first, dtype=torch.float64))
    assert coefficients[1] == 0.0
    torch.testing.assert_close(params[0].grad, torch.zeros_like(params[0]), rtol=0, atol=1e-14)
    torch.testing.assert_close(params[1].grad, before_second, rtol=0, atol=0)
    for p in params:
        assert float((p.grad.double() * p.detach().double()).sum()) >= -1e-12


def test_zero_parameters_zero_gradients_and_missing_gradients():
    zero_theta = torch.nn.Parameter(torch.zeros(5))
    zero_theta.grad = torch.randn(5)
    before = zero_theta.grad.clone()
    assert float(apply_tuning_free_l2_([zero_theta])) == 0.0
    torch.testing.assert_close(zero_theta.grad, before, rtol=0, atol=0)

    zero_grad = torch.nn.Parameter(torch.randn(5))
    zero_grad.grad = torch.zeros(5)
    assert float(apply_tuning_free_l2_([zero_grad])) == 0.0
    assert torch.equal(zero_grad.grad, torch.zeros(5))

    no_grad = torch.nn.Parameter(torch.randn(3))
    coefficients = apply_tuning_free_l2_([no_grad, zero_theta], per_tensor=True)
    assert coefficients.shape == (1,) and no_grad.grad is None
    assert apply_tuning_free_l2_([]).shape == ()
    for tensor in (zero_theta.grad, zero_grad.grad):
        assert torch.isfinite(tensor).all()


def test_low_precision_parameters():
    params = make_parameters(4, dtype=torch.bfloat16)
    for p in params:
        p.grad = -p.detach() * 2
    coefficient = apply_tuning_free_l2_(params)
    assert coefficient.dtype == torch.float64 and abs(float(coefficient) - 2.0) < 1e-12
    for p in params:
        assert p.grad.dtype == torch.bfloat16 and torch.isfinite(p.grad).all()
        assert float(p.grad.abs().max()) < 0.05


def test_an_sgd_step_does_not_grow_the_weights_to_first_order():
    params = make_parameters(5)
    for p in params:
        p.grad.add_(p.detach(), alpha=-4.0)
    apply_tuning_free_l2_(params)
    before = float(flat(params).square().sum())
    step = 1e-4
    after = float(sum((p.detach() - step * p.grad).double().square().sum() for p in params))
    assert after - before <= step**2 * float(flat(p.grad for p in params).square().sum()) * 1.0001
