"""Tuning-free L2 regularisation (Su 2022, "Multi-task learning notes III: primary and auxiliary" (多任务学习漫谈（三）：分主次之序), section "regularisation"): weight decay as an auxiliary task.

Treat ``½||θ||²`` (gradient ``θ``) as an auxiliary task that must not rise while the main loss (gradient ``g``)
is minimised. The one-auxiliary primary/auxiliary solution (ibid., eq. 7) replaces the gradient by

    g + relu(-<g, θ>) / ||θ||² · θ,

so ``<g', θ> ≥ 0``: a descent step never increases ``||θ||²`` to first order, and no decay coefficient is tuned.
When ``<g, θ> ≥ 0`` the gradient is unchanged; a zero ``θ`` or a zero ``g`` leaves it unchanged too.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.no_grad()
def apply_tuning_free_l2_(parameters: Iterable[torch.Tensor], per_tensor: bool = False) -> torch.Tensor:
    """Apply the tuning-free L2 correction in place to the ``.grad`` of ``parameters``.

    Args:
        parameters: the parameters (tensors whose ``.grad`` is ``None`` are skipped).
        per_tensor: ``False`` (default) treats all parameters as one flat vector ``θ`` (one coefficient, the
            post's formula); ``True`` applies the formula to every parameter tensor separately (one coefficient
            each: every tensor's norm is kept from growing, a stronger, layer-wise constraint).

    Returns:
        The coefficients ``λ = relu(-<g, θ>)/||θ||²`` in float64: a 0-d tensor, or one entry per parameter with a
        gradient when ``per_tensor``. No host synchronisation happens (``λ`` stays on the parameters' device).

    Inner products are accumulated in float64. With sharded parameters (FSDP, ZeRO-3) the flat mode needs the
    inner products over the full vector: call it on gathered parameters, or use ``per_tensor`` on whole tensors.
    """
    pairs = [(p, p.grad) for p in parameters if p.grad is not None]
    if not pairs:
        return torch.zeros((0,) if per_tensor else (), dtype=torch.float64)
    products = torch.stack([(g.double() * p.double()).sum() for p, g in pairs])
    squared_norms = torch.stack([p.double().square().sum() for p, _ in pairs])
    if not per_tensor:
        products, squared_norms = products.sum(), squared_norms.sum()
    coefficients = torch.where(
        squared_norms > 0, torch.relu(-products) / torch.where(squared_norms > 0, squared_norms, 1.0), 0.0
    )
    for index, (param, grad) in enumerate(pairs):
        coefficient = coefficients[index] if per_tensor else coefficients
        grad.addcmul_(param.to(grad.dtype), coefficient.to(device=grad.device, dtype=grad.dtype))
    return coefficients
