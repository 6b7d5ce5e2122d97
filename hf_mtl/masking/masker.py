"""The step logic of gradient-guided loss masking, independent of any Trainer.

One optimizer step (possibly several accumulation micro-batches, possibly several DDP ranks):

1. ``begin_step``: every ``refresh_steps`` steps draw a clean batch and set ``g_clean = ∇L_clean`` (averaged
   over ranks, so every rank holds the same vector). A zero or non-finite ``g_clean`` skips masking for the
   step (logged), never producing NaN. With ``balance_labels`` the example rule compares against
   ``Σ_c g_c/‖g_c‖`` instead, ``g_c`` the clean gradient of label group ``c`` (:mod:`hf_mtl.masking.label_groups`).
2. ``micro_batch``:
   * ``example`` granularity (Wang et al. 2021, arXiv 2102.13549): one JVP along ``ĝ = g_clean/||g_clean||``
     gives every alignment ``a_b = <∇ℓ_b, ĝ>`` together with the per-example losses; the rule
     (:mod:`hf_mtl.masking.rules`) keeps ``m_b``; the gradient of ``Σ_b m_b w_b ℓ_b`` is accumulated.
   * ``batch`` granularity (the primary/auxiliary rule of docs/masking.md): the gradient of the plain noisy loss is accumulated.
3. ``end_step``: average the accumulated gradients over ranks; ``train_on_clean`` adds ``g_clean``; in
   ``batch`` mode apply the primary/auxiliary rule with the noisy loss as the main task and the clean loss as
   the auxiliary that must not rise: ``u = g + λ g_clean``, ``λ = relu(-<g, g_clean>)/||g_clean||²``.

Gradients are taken with ``torch.autograd.grad`` on the unwrapped module and written into ``.grad`` (summed
over micro-batches, averaged over ranks in one collective), exactly as a DDP backward would leave them.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from hf_mtl.combiners import get_combiner
from hf_mtl.gradients import average_gradients_over_ranks, distributed
from hf_mtl.masking.alignment import losses_and_alignments
from hf_mtl.masking.clean_data import CleanBatchStream
from hf_mtl.masking.label_groups import label_groups
from hf_mtl.masking.per_example import ExampleLosses, PerExampleLoss
from hf_mtl.masking.rules import keep_mask

logger = logging.getLogger(__name__)

GRANULARITIES = ("example", "batch")


@dataclass
class MaskingConfig:
    """What :class:`LossMasker` does; built from the ``masking_*`` training arguments by ``from_args``."""

    granularity: str = "example"
    refresh_steps: int = 1
    threshold: float = 0.0
    keep_fraction: float | None = None
    train_on_clean: bool = False
    parameters: str | None = None
    balance_labels: bool = False

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"Masking granularity must be one of {GRANULARITIES}, got {self.granularity!r}.")
        if self.balance_labels and self.granularity != "example":
            raise ValueError("masking_balance_labels shapes the direction example masking compares against; batch "
                             "mode constrains the clean loss itself and does not use it.")

    @classmethod
    def from_args(cls, args: Any) -> MaskingConfig:
        return cls(
            granularity=args.loss_masking,
            refresh_steps=int(args.masking_refresh_steps),
            threshold=float(args.masking_threshold),
            keep_fraction=args.masking_keep_fraction,
            train_on_clean=bool(args.masking_train_on_clean),
            parameters=args.masking_parameters,
            balance_labels=bool(args.masking_balance_labels),
        )


@dataclass
class MaskRecord:
    """One micro-batch's decisions (on CPU), handed to observers: ``keep[b]`` is False for a masked example.

    On a step whose masking was skipped (zero or non-finite ``g_clean``) the alignments are NaN and every
    example is kept.
    """

    step: int
    alignments: torch.Tensor
    keep: torch.Tensor


def _gather_variable(values: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' 1-D ``values`` concatenated in rank order, and where this rank's part starts."""
    world = dist.get_world_size()
    size = torch.tensor([values.numel()], device=values.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros(max(counts), dtype=values.dtype, device=values.device)
    padded[: values.numel()] = values
    pieces = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded)
    rank = dist.get_rank()
    return torch.cat([p[:c] for p, c in zip(pieces, counts, strict=True)]), sum(counts[:rank])


class LossMasker:
    """Holds the clean stream and ``g_clean``; turns micro-batches into masked gradients.

    Args:
        config: a :class:`MaskingConfig`.
        clean_batches: the stream of clean batches (this rank's share).
        per_example_loss: ``fn(module, batch) -> ExampleLosses``, for clean and noisy batches alike.
        prepare_batch: moves a collated clean batch to the device (the Trainer's ``_prepare_inputs``).
    """

    def __init__(
        self,
        config: MaskingConfig,
        clean_batches: CleanBatchStream,
        per_example_loss: PerExampleLoss,
        prepare_batch: Callable[[Any], Any] = lambda batch: batch,
    ) -> None:
        self.config = config
        self.clean_batches = clean_batches
        self.per_example_loss = per_example_loss
        self.prepare_batch = prepare_batch
        self.observers: list[Callable[[Mapping[str, Any], MaskRecord], None]] = []
        self._combiner = get_combiner("primary_auxiliary", primary=[0])
        self._names: list[str] | None = None
        self._params: list[nn.Parameter] = []
        self._selected: list[int] = []
        self._clean: list[torch.Tensor] | None = None  # g_clean on the selected parameters
        self._clean_norm = 0.0
        self._clean_full: list[torch.Tensor | None] | None = None  # g_clean on every parameter (train_on_clean)
        self._refreshed = False
        self._stream_before_refresh: dict[str, int] | None = None
        self._skip_reason: str | None = None
        self._kept = 0
        self._total = 0
        self.last_step: dict[str, Any] = {}
        self.last_task_losses: dict[str, float] | None = None
        self._window: dict[str, float] = {}
        self._reset_window()

    # --- parameters -----------------------------------------------------------------------------------
    def bind(self, module: nn.Module) -> None:
        """Fix the trainable parameters and the subset ``g_clean`` spans (``config.parameters``)."""
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("Loss masking: the model has no trainable parameter.")
        self._names = [n for n, _ in named]
        self._params = [p for _, p in named]
        if self.config.parameters is None:
            self._selected = list(range(len(named)))
        else:
            pattern = re.compile(self.config.parameters)
            self._selected = [i for i, n in enumerate(self._names) if pattern.search(n)]
            if not self._selected:
                raise ValueError(
                    f"masking_parameters={self.config.parameters!r} matches no trainable parameter; names look like "
                    f"{self._names[:3]} … {self._names[-2:]}."
                )

    @property
    def selected_names(self) -> list[str]:
        return [self._names[i] for i in self._selected]

    def _check_bound(self, module: nn.Module) -> None:
        if self._names is None:
            self.bind(module)

    # --- g_clean ----------------------------------------------------------------------------------------
    def begin_step(self, module: nn.Module, step: int, context: Callable[[], Any], grad_scale: float = 1.0) -> None:
        """Refresh ``g_clean`` when due (every ``refresh_steps`` steps, and after a resume)."""
        self._check_bound(module)
        self._kept = self._total = 0
        if not self._refreshed:
            if self._stream_before_refresh is not None and step % self.config.refresh_steps != 0:
                # Resumed between refreshes: recompute g_clean from the batch the last refresh drew.
                self._refresh(module, step, context, grad_scale, replay=self._stream_before_refresh)
                return
            self._refresh(module, step, context, grad_scale)
        elif step % self.config.refresh_steps == 0:
            self._refresh(module, step, context, grad_scale)

    def _refresh(
        self, module: nn.Module, step: int, context: Callable[[], Any], grad_scale: float,
        replay: dict[str, int] | None = None,
    ) -> None:
        stream = self.clean_batches
        if replay is not None:
            current = stream.state_dict()
            stream.load_state_dict(replay)
            batch = self.prepare_batch(stream.next_batch())
            stream.load_state_dict(current)
        else:
            self._stream_before_refresh = stream.state_dict()
            batch = self.prepare_batch(stream.next_batch())
        self._refreshed = True
        with context():
            clean = self.per_example_loss(module, batch)
            loss = clean.total()
        targets = list(range(len(self._params))) if self.config.train_on_clean else self._selected
        if self.config.balance_labels:
            groups, num_groups = label_groups(module, batch)
            selected = self._balanced_direction(clean, groups, num_groups, grad_scale,
                                                retain_graph=self.config.train_on_clean)
            pieces = self._clean_gradient(loss, targets, grad_scale) if self.config.train_on_clean else []
        else:
            pieces = self._clean_gradient(loss, targets, grad_scale)
            by_index = dict(zip(targets, pieces, strict=True))
            selected = [by_index[i] for i in self._selected]
        squared = sum(float(torch.dot(piece.reshape(-1), piece.reshape(-1))) for piece in selected)
        norm = math.sqrt(squared) if math.isfinite(squared) else math.nan
        self._clean_full = None
        if self.config.train_on_clean and math.isfinite(norm):
            self._clean_full = pieces
        if not math.isfinite(norm) or norm == 0.0:
            what = "zero" if norm == 0.0 else "non-finite"
            self._skip_reason = f"clean gradient is {what} (clean loss {float(loss.detach()):.6g})"
            self._clean = None
            self._clean_norm = 0.0
            logger.warning("Step %d: %s; loss masking is skipped for this step.", step, self._skip_reason)
            return
        self._skip_reason = None
        self._clean_norm = norm
        self._clean = selected

    def _flat_gradient(self, loss: torch.Tensor, params: list[nn.Parameter], grad_scale: float,
                       retain_graph: bool = False) -> torch.Tensor:
        """``∇loss`` over ``params``, flattened, float32, with the loss scale divided out (zeros where unused)."""
        grads = torch.autograd.grad(loss * grad_scale, params, allow_unused=True, retain_graph=retain_graph)
        return torch.cat([
            ((g.float() if grad_scale == 1.0 else g.float() / grad_scale) if g is not None
             else torch.zeros_like(p, dtype=torch.float32)).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ])

    def _clean_gradient(self, loss: torch.Tensor, targets: list[int], grad_scale: float) -> list[torch.Tensor]:
        """``g_clean`` on the ``targets`` parameters, averaged over ranks."""
        params = [self._params[i] for i in targets]
        flat = self._flat_gradient(loss, params, grad_scale)
        if distributed():
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(dist.get_world_size())
        return [part.view_as(p) for part, p in zip(flat.split([p.numel() for p in params]), params, strict=True)]

    def _balanced_direction(self, clean: ExampleLosses, groups: torch.Tensor, num_groups: int, grad_scale: float,
                            retain_graph: bool) -> list[torch.Tensor]:
        """``Σ_c g_c/‖g_c‖`` on the selected parameters, ``g_c`` the clean gradient of label group ``c`` summed
        over ranks (an empty group adds nothing; a non-finite one makes the result non-finite)."""
        params = [self._params[i] for i in self._selected]
        per_group = torch.zeros(num_groups, sum(p.numel() for p in params), device=params[0].device)
        present = torch.unique(groups[groups >= 0]).tolist()
        for position, group in enumerate(present):
            weights = torch.where(groups == group, clean.weights, torch.zeros_like(clean.weights))
            per_group[group] = self._flat_gradient((clean.losses * weights.to(clean.losses.dtype)).sum(), params,
                                                   grad_scale, retain_graph or position < len(present) - 1)
        if distributed():
            dist.all_reduce(per_group, op=dist.ReduceOp.SUM)
        norms = per_group.norm(dim=1, keepdim=True)
        direction = torch.where(norms > 0, per_group / norms, per_group).sum(dim=0)
        return [part.view_as(p) for part, p in zip(direction.split([p.numel() for p in params]), params, strict=True)]

    def clean_gradient(self) -> dict[str, torch.Tensor] | None:
        """``{name: g_clean slice}`` on the selected parameters (``None`` while masking is skipped)."""
        if self._clean is None:
            return None
        return {self._names[i]: t for i, t in zip(self._selected, self._clean, strict=True)}

    # --- micro-batches ----------------------------------------------------------------------------------
    def micro_batch(
        self, module: nn.Module, batch: Mapping[str, Any], scale: float, context: Callable[[], Any], step: int,
    ) -> torch.Tensor:
        """Accumulate this micro-batch's (masked) gradient, times ``scale``, into ``.grad``.

        Returns the plain (unmasked) loss of the micro-batch, detached.
        """
        self._check_bound(module)
        direction = self.clean_gradient() if self.config.granularity == "example" else None
        with context():
            if direction is not None:
                result, alignments = losses_and_alignments(module, self.per_example_loss, batch, direction)
                alignments = alignments / self._clean_norm  # <∇ℓ_b, ĝ> with ĝ the unit clean direction
            else:
                result, alignments = self.per_example_loss(module, batch), None
        keep = None
        if self.config.granularity == "example":
            if alignments is not None:
                keep = self._keep(alignments)
            size = result.losses.numel()
            self._kept += size if keep is None else int(keep.sum())
            self._total += size
            record = MaskRecord(
                step=step,
                alignments=alignments.cpu() if alignments is not None else torch.full((size,), torch.nan),
                keep=keep.cpu() if keep is not None else torch.ones(size, dtype=torch.bool),
            )
            for observer in self.observers:
                observer(batch, record)
        self.last_task_losses = result.task_losses
        loss = result.total(keep)
        grads = torch.autograd.grad(loss * scale, self._params, allow_unused=True)
        for param, grad in zip(self._params, grads, strict=True):
            if grad is not None:
                if param.grad is None:
                    param.grad = grad
                else:
                    param.grad.add_(grad)
        return result.total().detach()

    def _keep(self, alignments: torch.Tensor) -> torch.Tensor:
        if self.config.keep_fraction is None or not distributed():
            return keep_mask(alignments, self.config.threshold, self.config.keep_fraction)
        # The keep fraction applies to the global micro-batch (all ranks), as in one process with a larger batch.
        gathered, start = _gather_variable(alignments)
        return keep_mask(gathered, self.config.threshold, self.config.keep_fraction)[start : start + alignments.numel()]

    # --- end of the optimizer step -----------------------------------------------------------------------
    def end_step(self, step: int, grad_scale: float = 1.0) -> None:
        """Average ``.grad`` over ranks, add ``g_clean`` when training on it, apply the batch rule, record stats."""
        average_gradients_over_ranks(self._params)
        if self._clean_full is not None:
            for param, grad in zip(self._params, self._clean_full, strict=True):
                if param.grad is None:
                    param.grad = (grad * grad_scale).to(param.dtype)
                else:
                    param.grad.add_(grad.to(param.dtype), alpha=grad_scale)
        record: dict[str, Any] = {"step": step, "skipped": self._skip_reason is not None}
        if self._skip_reason is not None:
            record["reason"] = self._skip_reason
        if self.config.granularity == "batch":
            record.update(self._batch_rule(grad_scale))
        else:
            kept, total = self._kept, self._total
            if distributed():
                counts = torch.tensor([kept, total], dtype=torch.float64, device=self._params[0].device)
                dist.all_reduce(counts, op=dist.ReduceOp.SUM)
                kept, total = int(counts[0]), int(counts[1])
            record["masked_fraction"] = 1.0 - kept / total if total else 0.0
            record["masked_examples"] = total - kept
            record["examples"] = total
        self.last_step = record
        self._update_window(record)

    def _batch_rule(self, grad_scale: float) -> dict[str, Any]:
        """``u = g + λ g_clean`` on the selected parameters, ``λ`` from the primary/auxiliary combiner.

        ``.grad`` holds ``g`` times the loss scale and ``g_clean`` is unscaled, so the ``λ`` solved here is in
        scaled units and ``λ g_clean`` lands on ``.grad`` correctly scaled; the recorded ``λ`` is unscaled.
        """
        if self._clean is None:
            return {"lambda": 0.0, "clean_cosine": 0.0}
        params = [self._params[i] for i in self._selected]
        # Per-tensor float32 dot products summed in float64: two passes over the gradient, no flat copy.
        main_squared = product = 0.0
        for param, clean in zip(params, self._clean, strict=True):
            if param.grad is not None:
                grad = param.grad.reshape(-1).float()
                main_squared += float(torch.dot(grad, grad))
                product += float(torch.dot(grad, clean.reshape(-1)))
        if not (math.isfinite(main_squared) and math.isfinite(product)):
            return {"lambda": 0.0, "clean_cosine": 0.0, "reason": "noisy gradient is non-finite"}
        gram = torch.tensor([[main_squared, product], [product, self._clean_norm**2]], dtype=torch.float64)
        weights = self._combiner(gram)
        lam = float(weights[1])
        if lam > 0.0:
            for param, clean in zip(params, self._clean, strict=True):
                if param.grad is None:
                    param.grad = (clean * lam).to(param.dtype)
                else:
                    param.grad.add_(clean.to(param.dtype), alpha=lam)
        denominator = math.sqrt(gram[0, 0].item() * gram[1, 1].item())
        return {"lambda": lam / grad_scale, "clean_cosine": product / denominator if denominator > 0 else 0.0}

    # --- logging ------------------------------------------------------------------------------------------
    def _reset_window(self) -> None:
        self._window = {"steps": 0, "skipped": 0, "masked_fraction": 0.0, "lambda": 0.0, "active": 0,
                        "clean_cosine": 0.0}

    def _update_window(self, record: Mapping[str, Any]) -> None:
        window = self._window
        window["steps"] += 1
        window["skipped"] += int(record["skipped"])
        if "masked_fraction" in record:
            window["masked_fraction"] += record["masked_fraction"]
        if "lambda" in record:
            window["lambda"] += record["lambda"]
            window["active"] += int(record["lambda"] > 0.0)
            window["clean_cosine"] += record["clean_cosine"]

    def log_metrics(self) -> dict[str, float]:
        """Means over the optimizer steps since the last call (then reset)."""
        window = self._window
        steps = window["steps"]
        if steps == 0:
            return {}
        out = {"masking_skipped_steps": float(window["skipped"])}
        if self.config.granularity == "example":
            out["masked_fraction"] = window["masked_fraction"] / steps
        else:
            out["masking_lambda"] = window["lambda"] / steps
            out["masking_active_fraction"] = window["active"] / steps
            out["masking_clean_cosine"] = window["clean_cosine"] / steps
        self._reset_window()
        return out

    # --- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Clean-stream position (and where the last refresh drew); ``g_clean`` itself is recomputed on resume."""
        return {"clean_batches": self.clean_batches.state_dict(), "before_last_refresh": self._stream_before_refresh}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.clean_batches.load_state_dict(state["clean_batches"])
        self._stream_before_refresh = state.get("before_last_refresh")
        self._refreshed = False
        self._clean = None
