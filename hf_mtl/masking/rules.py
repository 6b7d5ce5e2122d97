"""Which examples to keep, given their alignments ``a_b = <∇ℓ_b, ĝ_clean>`` (``ĝ`` the unit clean direction).

* threshold (Wang et al. 2021, arXiv 2102.13549): keep ``b`` iff ``a_b ≥ τ``; ``τ = 0`` drops exactly the
  examples whose gradient points against the clean gradient (a descent step on them raises the clean loss
  to first order).
* keep fraction: keep the ``⌈f·B⌉`` best-aligned examples whatever their sign (ties broken by position, so
  the rule is deterministic); useful when the noise rate is known roughly.

An example with a non-finite alignment is always dropped.
"""

from __future__ import annotations

import math

import torch


def check_keep_fraction(keep_fraction: float) -> float:
    keep_fraction = float(keep_fraction)
    if not (0.0 < keep_fraction <= 1.0):
        raise ValueError(f"masking keep fraction must lie in (0, 1], got {keep_fraction}.")
    return keep_fraction


def threshold_mask(alignments: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Boolean keep-mask ``a_b ≥ threshold`` (non-finite alignments are dropped)."""
    if alignments.dim() != 1:
        raise ValueError(f"alignments must have shape (B,), got {tuple(alignments.shape)}.")
    if not math.isfinite(threshold):
        raise ValueError(f"masking threshold must be finite, got {threshold}.")
    return torch.isfinite(alignments) & (alignments.double() >= threshold)  # no rounding of the threshold


def keep_fraction_mask(alignments: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """Boolean keep-mask of the ``⌈keep_fraction·B⌉`` largest finite alignments (earlier position wins ties)."""
    if alignments.dim() != 1:
        raise ValueError(f"alignments must have shape (B,), got {tuple(alignments.shape)}.")
    keep_fraction = check_keep_fraction(keep_fraction)
    finite = torch.isfinite(alignments)
    count = min(math.ceil(keep_fraction * alignments.numel() - 1e-9), int(finite.sum()))
    order = torch.sort(torch.where(finite, alignments, -torch.inf), descending=True, stable=True).indices
    mask = torch.zeros_like(finite)
    mask[order[:count]] = True
    return mask


def keep_mask(alignments: torch.Tensor, threshold: float = 0.0, keep_fraction: float | None = None) -> torch.Tensor:
    """The keep-fraction rule when ``keep_fraction`` is given, the threshold rule otherwise."""
    if keep_fraction is not None:
        return keep_fraction_mask(alignments, keep_fraction)
    return threshold_mask(alignments, threshold)
