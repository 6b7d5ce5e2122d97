"""Per-task gradients → Gram matrix → one combined gradient.

The step strategies (:mod:`hf_mtl.steps`) delegate here. Two sources of per-task gradients (docs/architecture.md):

* :class:`TaskGradientBuffer` — ``params`` mode: the gradients of the shared encoder parameters, one flat
  row per task (``J``, K×P), accumulated over gradient-accumulation micro-batches and all-reduced across
  ranks in a single collective together with the task-specific (head) gradients. ``G = J Jᵀ`` is one
  matmul and the update ``w @ J`` is written into ``.grad``.
* :func:`representation_gram` — ``encoder_output`` mode: ``G_ij = <∂L_i/∂z, ∂L_j/∂z>`` with ``z`` the
  shared encoder output flattened over batch, tokens and hidden (the MGDA-UB bound of Sener & Koltun
  2018); only the heads are differentiated, then one ordinary backward of ``Σ w_k L_k`` follows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def distributed() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _flat_numel(params: Sequence[torch.Tensor]) -> int:
    return sum(p.numel() for p in params)


class TaskGradientBuffer:
    """``J`` (K × P): per-task gradients of the shared parameters, accumulated over micro-batches."""

    def __init__(self, shared_params: Sequence[torch.nn.Parameter], num_tasks: int) -> None:
        if not shared_params:
            raise ValueError("No shared parameters: per-task gradient combination needs a shared encoder.")
        self.params = list(shared_params)
        first = self.params[0]
        self.jacobian = torch.empty(num_tasks, _flat_numel(self.params), device=first.device, dtype=torch.float32)
        # A row is written (copy) by its first micro-batch and accumulated (add) after: no zeroing pass.
        self.seen = torch.zeros(num_tasks, dtype=torch.bool)
        self.touched = [False] * len(self.params)

    @property
    def num_tasks(self) -> int:
        return self.jacobian.shape[0]

    def add(self, task_index: int, grads: Sequence[torch.Tensor | None]) -> None:
        """Add one task's gradient (aligned with the shared parameters; ``None`` means zero)."""
        row = self.jacobian[task_index]
        first = not bool(self.seen[task_index])
        offset = 0
        for i, (param, grad) in enumerate(zip(self.params, grads, strict=True)):
            n = param.numel()
            target = row[offset : offset + n]
            if grad is not None:
                if first:
                    target.copy_(grad.reshape(-1))
                else:
                    target.add_(grad.reshape(-1).to(row.dtype))
                self.touched[i] = True
            elif first:
                target.zero_()
            offset += n
        self.seen[task_index] = True

    def all_reduce_with(self, extra: torch.Tensor | None) -> torch.Tensor | None:
        """Average ``J`` and ``extra`` (the flattened task-specific grads) over ranks in one collective."""
        if not distributed():
            return extra
        world = dist.get_world_size()
        self._zero_unseen_rows()  # this rank's unwritten rows must add zeros, not stale memory
        pieces = [self.jacobian.reshape(-1)] + ([extra.to(self.jacobian.dtype)] if extra is not None else [])
        flat = torch.cat(pieces)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)
        n = self.jacobian.numel()
        self.jacobian.copy_(flat[:n].view_as(self.jacobian))
        seen = self.seen.to(self.jacobian.device, torch.float32)
        dist.all_reduce(seen, op=dist.ReduceOp.MAX)
        self.seen = seen.bool().cpu()
        return None if extra is None else flat[n:].to(extra.dtype)

    def gram(self) -> torch.Tensor:
        """``G = J Jᵀ`` in float64 (one matmul); rows of tasks not seen this step are zero."""
        self._zero_unseen_rows()
        return (self.jacobian @ self.jacobian.T).double()

    def write_combination(self, weights: torch.Tensor, scale: float = 1.0) -> None:
        """Set each shared parameter's ``.grad`` to its slice of ``scale · Σ_k w_k J_k``.

        Parameters no task's loss reached (e.g. an unused pooler) keep ``.grad = None``, as after a plain
        backward, so optimizers skip them.
        """
        weights = weights.to(self.jacobian.dtype).to(self.jacobian.device)
        rows = torch.nonzero(weights).flatten()  # rows left out may hold NaN: never multiply them by 0
        if len(rows) == self.num_tasks:
            combined = weights @ self.jacobian
        else:
            combined = weights[rows] @ self.jacobian.index_select(0, rows)
        if scale != 1.0:
            combined.mul_(scale)
        offset = 0
        for param, touched in zip(self.params, self.touched, strict=True):
            n = param.numel()
            param.grad = combined[offset : offset + n].view_as(param).to(param.dtype) if touched else None
            offset += n

    def _zero_unseen_rows(self) -> None:
        for k in torch.nonzero(~self.seen).flatten().tolist():
            self.jacobian[k].zero_()

    def reset(self) -> None:
        self.seen.zero_()
        self.touched = [False] * len(self.params)


def flatten_grads(params: Sequence[torch.nn.Parameter]) -> torch.Tensor | None:
    """Concatenate the ``.grad`` of ``params`` (zeros where missing); ``None`` for no parameters."""
    if not params:
        return None
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
    )


def unflatten_into_grads(params: Sequence[torch.nn.Parameter], flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone()
        offset += n


def representation_gram(
    losses: Sequence[torch.Tensor], representations: Sequence[torch.Tensor], retain_graph: bool = True
) -> torch.Tensor:
    """``G_ij = Σ_z <∂L_i/∂z, ∂L_j/∂z>`` over the given representations (the graph is kept for a later
    backward unless ``retain_graph=False``).

    ``representations`` lists the tensors the losses depend on (one shared ``z``, or one per task in
    the disjoint layout, where the cross terms vanish and ``G`` is diagonal).
    """
    rows = []
    for k, loss in enumerate(losses):
        keep = retain_graph or k < len(losses) - 1
        grads = torch.autograd.grad(loss, list(representations), retain_graph=keep, allow_unused=True)
        rows.append(torch.cat([
            (g if g is not None else torch.zeros_like(z)).reshape(-1).float()
            for g, z in zip(grads, representations, strict=True)
        ]))
    stacked = torch.stack(rows)
    return (stacked @ stacked.T).double()


def average_gradients_over_ranks(params: Sequence[torch.nn.Parameter]) -> None:
    """Average every ``.grad`` over ranks in one all-reduce, as a DDP backward would; ``None`` stays ``None``
    unless another rank has a gradient for that parameter (one flag per parameter travels along)."""
    if not distributed() or not params:
        return
    device = params[0].device
    flat = torch.cat(
        [(p.grad.float() if p.grad is not None else torch.zeros(p.numel(), device=device)).reshape(-1) for p in params]
        + [torch.tensor([float(p.grad is not None) for p in params], device=device)]
    )
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    sizes = [p.numel() for p in params]
    pieces = flat[: sum(sizes)].div_(dist.get_world_size()).split(sizes)
    touched = flat[sum(sizes):]
    for param, piece, flag in zip(params, pieces, touched.tolist(), strict=True):
        param.grad = piece.view_as(param).to(param.dtype).clone() if flag > 0 else None


def gram_diagnostics(gram: torch.Tensor, task_names: Sequence[str]) -> dict[str, float]:
    """Per-task gradient norms ``√G_kk`` and pairwise cosines ``G_ij/√(G_ii G_jj)`` read off the Gram."""
    gram = gram.detach().double().cpu()
    norms = gram.diagonal().clamp_min(0).sqrt()
    out = {f"grad_norm_{name}": float(norms[i]) for i, name in enumerate(task_names)}
    for i in range(len(task_names)):
        for j in range(i + 1, len(task_names)):
            denom = float(norms[i] * norms[j])
            cosine = float(gram[i, j]) / denom if denom > 0 else 0.0
            out[f"cosine_{task_names[i]}__{task_names[j]}"] = cosine
    return out
