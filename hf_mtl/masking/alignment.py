"""Per-example gradient alignments ``a_b = <∇_θ ℓ_b, v>`` for a whole batch in one forward-mode pass.

``a_b`` is the directional derivative of ``ℓ_b`` along ``v``: ``a = d/dε ℓ(θ + ε v)|₀ = J v`` with ``J`` the
B×P per-example Jacobian. A forward-mode JVP (``torch.func.jvp`` over ``torch.func.functional_call``) yields
all B numbers from one forward pass carrying tangents, instead of B backward passes or B per-example
gradient buffers (Wang et al. 2021, "Gradient-guided Loss Masking for Neural Machine Translation",
arXiv 2102.13549, use ``v = g_clean``).

The primal output of that pass keeps its autograd graph, so :func:`losses_and_alignments` returns the
per-example losses ready for the masked backward: the masking step costs one tangent-carrying forward and
one backward, not an extra forward.

The JVP runs on the unwrapped module (DDP and other wrappers re-emit outputs through their own hooks).
Attention goes through PyTorch's math SDPA backend inside the pass: the fused CPU/GPU kernels have no
forward-mode derivative.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from hf_mtl.masking.per_example import ExampleLosses, PerExampleLoss


class _ExampleLossModule(nn.Module):
    """``forward(batch) = per_example_loss(model, batch)`` as a module, so ``functional_call`` can swap its parameters."""

    def __init__(self, model: nn.Module, per_example_loss: PerExampleLoss) -> None:
        super().__init__()
        self.model = model
        self.per_example_loss = per_example_loss
        self.task_losses: dict[str, float] | None = None  # plain numbers of the last call, for logging

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        result = self.per_example_loss(self.model, batch)
        self.task_losses = result.task_losses
        extra = result.extra if result.extra is not None else result.losses.new_zeros(())
        return result.losses, result.weights, extra


@contextlib.contextmanager
def forward_ad_attention() -> Iterator[None]:
    """Route ``scaled_dot_product_attention`` to the math backend, which supports forward-mode AD."""
    with sdpa_kernel([SDPBackend.MATH]):
        yield


def _check_direction(model: nn.Module, direction: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not direction:
        raise ValueError("The alignment direction is empty: give at least one parameter's tangent.")
    params = dict(model.named_parameters())
    unknown = [name for name in direction if name not in params]
    if unknown:
        raise ValueError(f"Direction names parameter(s) {unknown[:5]} that {type(model).__name__} does not have.")
    for name, tangent in direction.items():
        if tangent.shape != params[name].shape:
            raise ValueError(
                f"Direction for {name!r} has shape {tuple(tangent.shape)}, the parameter {tuple(params[name].shape)}."
            )
    return params


def losses_and_alignments(
    model: nn.Module,
    per_example_loss: PerExampleLoss,
    batch: Mapping[str, Any],
    direction: Mapping[str, torch.Tensor],
) -> tuple[ExampleLosses, torch.Tensor]:
    """Per-example losses (with their autograd graph) and alignments ``<∇ℓ_b, direction>`` from one JVP.

    Args:
        model: the unwrapped module (parameters not named in ``direction`` have a zero tangent).
        per_example_loss: ``fn(model, batch) -> ExampleLosses``.
        batch: the batch, on the model's device.
        direction: ``{parameter name: tangent}``, a subset of ``model.named_parameters()``.

    Returns:
        ``(ExampleLosses, alignments)``; alignments are detached, float32, shape (B,).
    """
    params = _check_direction(model, direction)
    wrapper = _ExampleLossModule(model, per_example_loss)
    names = list(direction)
    primals = {f"model.{n}": params[n] for n in names}
    tangents = {f"model.{n}": direction[n].to(params[n].dtype) for n in names}

    def loss_of(selected: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return functional_call(wrapper, selected, (batch,))

    try:
        with forward_ad_attention():
            (losses, weights, extra), (loss_tangents, _, _) = jvp(loss_of, (primals,), (tangents,))
    except (NotImplementedError, RuntimeError) as err:
        if "functorch transforms" in str(err):  # an autograd.Function without setup_context: no torch.func at all
            raise NotImplementedError(
                f"Example masking runs {type(model).__name__} under torch.func.jvp, and it uses a custom "
                f"autograd.Function that torch.func cannot run ({err}). Use loss_masking='batch'."
            ) from err
        if "forward" not in str(err).lower() or "AD" not in str(err):
            raise
        raise NotImplementedError(
            f"Example masking needs forward-mode AD through {type(model).__name__}, and an operation in it has "
            f"none ({err}). Use loss_masking='batch', or masking_parameters restricted to parameters above that "
            "operation (tangents start at the chosen parameters)."
        ) from err
    alignments = loss_tangents.detach().float()
    del loss_tangents  # frees the tangent's own autograd graph before the backward
    return ExampleLosses(losses, weights, extra, wrapper.task_losses), alignments


def example_alignments(
    model: nn.Module,
    per_example_loss: PerExampleLoss,
    batch: Mapping[str, Any],
    direction: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """``<∇_θ ℓ_b, direction>`` for every example ``b`` of ``batch`` (shape (B,)), by one forward-mode JVP.

    ``direction`` maps parameter names of ``model`` to tangents of the same shapes (e.g. the clean-batch
    gradient ``g_clean``); parameters it leaves out count as zero. Dropout, if active, uses one mask for the
    whole pass, so the alignments are those of the losses that pass computes.
    """
    with torch.no_grad():
        _, alignments = losses_and_alignments(model, per_example_loss, batch, direction)
    return alignments
