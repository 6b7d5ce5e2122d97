"""Per-task gradients → Gram matrix → one combined gradient.

The step strategies (:mod:`hf_mtl.steps`) delegate here. Two sources of per-task gradients (docs/architecture.md):

* :class:`TaskGradientBuffer` — ``params`` mode: the gradients of the shared encoder parameters, one flat
  row per task (``J``, K×P), accumulated over gradient-accumulation micro-batches. Across ranks ``J`` is
  reduce-scattered (each rank owns P/W columns of every row), each rank forms the Gram of its columns, and one
  small all-reduce carries the K×K Gram with the task-specific (head) gradients; the update ``w @ J`` is
  combined column-wise and all-gathered into ``.grad`` (or ``J`` is all-reduced whole with ``shard=False``).
  ``G = J Jᵀ`` is summed block by block in float64 (:func:`blocked_gram`). A vocabulary-sized embedding matrix
  (:func:`vocabulary_embeddings`) is kept, multiplied and combined only over the rows the step looked up
  (:class:`LookedUpRows`), outside the K × P storage: the other rows of its gradient are zero for every task.
* :func:`representation_gram` — ``encoder_output`` mode: ``G_ij = <∂L_i/∂z, ∂L_j/∂z>`` with ``z`` the
  shared encoder output flattened over batch, tokens and hidden (the MGDA-UB bound of Sener & Koltun
  2018); only the heads are differentiated, then one ordinary backward of ``Σ w_k L_k`` follows.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.profiler import record_function

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def profiled(label: str) -> Callable[[F], F]:
    """Mark each call of the function as ``label`` in ``torch.profiler`` traces (the step's phases, e.g.
    ``hf_mtl::gram``); a fresh ``record_function`` per call, so nested and concurrent calls stay separate."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            with record_function(label):
                return function(*args, **kwargs)

        return call  # type: ignore[return-value]

    return decorate


def distributed() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _flat_numel(params: Sequence[torch.Tensor]) -> int:
    return sum(p.numel() for p in params)


GRAM_BLOCK = 32768
WIDENED_COLUMNS = 1 << 21  # a float16/bfloat16 J is read this many columns at a time, widened to float32
BUFFER_DTYPES = ("float32", "bfloat16")


def _float32_pieces(rows: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first column, rows[:, piece] in float32)``: ``rows`` itself when float32, else pieces of
    ``WIDENED_COLUMNS`` widened one at a time, each freed before the next (the arithmetic stays float32)."""
    if rows.dtype == torch.float32:
        yield 0, rows
        return
    for start in range(0, rows.shape[1], WIDENED_COLUMNS):
        yield start, rows[:, start : start + WIDENED_COLUMNS].float()


@profiled("hf_mtl::gram")
def blocked_gram(rows: torch.Tensor, block: int = GRAM_BLOCK) -> torch.Tensor:
    """``rows rowsᵀ`` (K×K, float64) summed block by block.

    One float32 matmul over a long row accumulates its N products in long running sums: for 3 rows of
    4·10⁶ columns its relative error was 6e-5 against 6e-8 here (``tests/test_gradients.py``), and a MiniLM
    encoder has 2.3·10⁷. Here each block of ``block`` columns is one batched float32 matmul (a bfloat16 ``rows``
    is widened first) and the blocks are summed in float64.
    """
    k = rows.shape[0]
    gram = torch.zeros(k, k, dtype=torch.float64, device=rows.device)
    for _, piece in _float32_pieces(rows):
        n = piece.shape[1]
        full = n // block * block
        if full:
            blocks = piece[:, :full].reshape(k, full // block, block).transpose(0, 1)  # (N/b, K, b)
            gram += torch.bmm(blocks, blocks.transpose(1, 2)).sum(0, dtype=torch.float64)
        if full < n:
            tail = piece[:, full:]
            gram += (tail @ tail.T).double()
    return gram


VOCABULARY_ROWS = 4096  # an embedding matrix with at least this many rows is treated row by row


def vocabulary_embeddings(model: nn.Module, params: Sequence[torch.Tensor],
                          min_rows: int = VOCABULARY_ROWS) -> dict[int, list[nn.Embedding]]:
    """``{position in params: the nn.Embedding modules holding it}`` for the 2-D parameters of at least
    ``min_rows`` rows held by ``nn.Embedding`` modules only. A lookup's gradient is a scatter into the looked-up
    rows, so such a matrix's gradient is zero outside them; a matrix also held by another module (an output
    layer tied to the input embeddings) has a dense gradient and is left out."""
    holders: dict[int, list[nn.Module]] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            holders.setdefault(id(param), []).append(module)
    found = {}
    for i, param in enumerate(params):
        modules = holders.get(id(param), [])
        if (modules and all(isinstance(m, nn.Embedding) for m in modules) and param.dim() == 2
                and param.shape[0] >= min_rows):
            found[i] = modules
    return found


class Lookup(NamedTuple):
    """One ``nn.Embedding`` call, ``output = weight[indices]``, grouped by row once when recorded: ``∂L/∂weight``
    is ``∂L/∂output`` (flattened to one entry per index, entries at ``padding_idx`` left out: ``kept``) summed
    into ``rows``, entry ``j`` into ``rows[position[j]]``."""

    output: torch.Tensor
    rows: torch.Tensor  # the distinct rows looked up (ascending), padding_idx left out
    position: torch.Tensor  # each kept entry's index into rows
    kept: torch.Tensor | None  # the entries not at padding_idx (None: all of them)

    @classmethod
    def of(cls, indices: torch.Tensor, output: torch.Tensor, padding_idx: int | None) -> Lookup:
        flat = indices.reshape(-1)
        kept = None if padding_idx is None else flat != padding_idx
        rows, position = torch.unique(flat if kept is None else flat[kept], return_inverse=True)
        return cls(output, rows, position, kept)


class LookedUpRows:
    """The rows of one embedding matrix that the forwards run under :meth:`recording` looked up since
    :meth:`clear`, as a mask over its rows (the union over micro-batches, and over ranks after a reduction), and
    the last recording's lookups (only where ``∂L/∂output`` gives ``∂L/∂weight``: ``exact_lookups``).

    Args:
        embeddings: the ``nn.Embedding`` modules holding the matrix (tied input embeddings: several).
    """

    def __init__(self, embeddings: Sequence[nn.Embedding]) -> None:
        self.embeddings = list(embeddings)
        weight = self.embeddings[0].weight
        self.mask = torch.zeros(weight.shape[0], dtype=torch.bool, device=weight.device)
        self.lookups: list[Lookup] = []
        # ∂L/∂output scattered into the rows is ∂L/∂weight only for nn.Embedding's own forward, unscaled.
        self.exact_lookups = all(type(m).forward is nn.Embedding.forward and not m.scale_grad_by_freq
                                 and not m.sparse for m in self.embeddings)

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record the indices each module looks up inside the block, and the lookups (lookups without gradient
        are not recorded: they add nothing to the gradient)."""
        self.lookups = []
        handles = [m.register_forward_hook(self._record, with_kwargs=True) for m in self.embeddings]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _record(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        indices = args[0] if args else kwargs.get("input")
        if indices is None or not torch.is_grad_enabled():
            return
        self.mask[indices.reshape(-1).to(self.mask.device)] = True
        if self.exact_lookups and isinstance(output, torch.Tensor) and output.requires_grad:
            self.lookups.append(Lookup.of(indices, output, module.padding_idx))

    def indices(self) -> torch.Tensor:
        """The looked-up rows, ascending."""
        return torch.nonzero(self.mask).flatten()

    def clear(self) -> None:
        self.mask.zero_()


def default_sharding() -> bool:
    """Shard the per-task gradients across ranks by default on NCCL only. On gloo (CPU, torch 2.13) the
    reduce-scatter costs more than the all-reduce it replaces: for 9.1·10⁷ float32 on 2 processes 3.2 s and
    +346 MiB of temporary memory, against 1.3 s and +4 MiB (``benchmarks/collectives.py``, docs/launch.md)."""
    return distributed() and dist.get_backend() == "nccl"


def _column_segments(params: Sequence[torch.Tensor], width: int) -> list[list[tuple[int, int, int, int]]]:
    """Per parameter, where its flat gradient lands in a (W, K, S) buffer: ``(block, column in block, start in
    the parameter, length)`` pieces, split where the parameter crosses a block boundary."""
    segments, offset = [], 0
    for param in params:
        n, pieces, start = param.numel(), [], 0
        while start < n:
            block, column = divmod(offset + start, width)
            length = min(n - start, width - column)
            pieces.append((block, column, start, length))
            start += length
        segments.append(pieces)
        offset += n
    return segments


def _ring_elements(kind: str, numel: int, world: int) -> int:
    """Elements one rank sends in a ring collective over ``numel`` elements (the whole tensor, not a rank's
    part): all-reduce ``2n(W−1)/W``, reduce-scatter and all-gather ``n(W−1)/W``."""
    factor = 2 if kind == "all_reduce" else 1
    return factor * numel * (world - 1) // world


class Differentiated(NamedTuple):
    """A task backward's inputs (:meth:`TaskGradientBuffer.differentiated`): ``tensors`` are the shared parameters
    at positions ``params``, then the outputs of ``lookups`` ((parameter position, :class:`Lookup`))."""

    params: list[int]
    lookups: list[tuple[int, Lookup]]
    tensors: list[torch.Tensor]


class _CompactRows:
    """The task rows of one row-sparse parameter: slot ``s`` of every task holds row ``rows[s]`` of its gradient
    (``values``: K × slots × row length); the parameter's other rows are zero for every task."""

    def __init__(self, num_tasks: int, param: torch.Tensor, dtype: torch.dtype) -> None:
        self.row_length = param.numel() // param.shape[0]
        self.values = torch.empty(num_tasks, 0, self.row_length, dtype=dtype, device=param.device)
        self.rows = torch.empty(0, dtype=torch.long, device=param.device)
        self.slot_of_row = torch.full((param.shape[0],), -1, dtype=torch.long, device=param.device)

    @property
    def used(self) -> torch.Tensor:
        """K × rows × row length: the slots in use."""
        return self.values[:, : len(self.rows)]

    def slots(self, rows: torch.Tensor) -> torch.Tensor:
        """The slots of ``rows``; rows without one get new slots, zero for every task."""
        slots = self.slot_of_row[rows]
        new = rows[slots < 0]
        if len(new):
            start = len(self.rows)
            self._reserve(start + len(new))
            self.values[:, start : start + len(new)].zero_()
            self.slot_of_row[new] = torch.arange(start, start + len(new), device=rows.device)
            self.rows = torch.cat([self.rows, new])
            slots = self.slot_of_row[rows]
        return slots

    def add(self, task_index: int, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Add ``values`` (one per row of ``rows``, distinct) to task ``task_index``'s slots of those rows; a task
        that has not written in this step holds zeros there, so its first add is its value."""
        slots = self.slots(rows)  # first: new slots may reallocate ``values``
        self.values[task_index].index_add_(0, slots, values.to(self.values.dtype))

    def replace(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Hold ``values`` (K × len(rows) × row length) for ``rows`` instead (after a reduction across ranks)."""
        self.clear()
        self._reserve(len(rows))
        self.values[:, : len(rows)] = values
        self.slot_of_row[rows] = torch.arange(len(rows), device=rows.device)
        self.rows = rows

    def _reserve(self, slots: int) -> None:
        if self.values.shape[1] < slots:  # grows by doubling: a few reallocations in the first steps
            grown = self.values.new_empty(self.values.shape[0], max(slots, 2 * self.values.shape[1]), self.row_length)
            grown[:, : len(self.rows)] = self.used
            self.values = grown

    def clear(self) -> None:
        self.slot_of_row[self.rows] = -1
        self.rows = self.rows[:0]


class TaskGradientBuffer:
    """``J`` (K × P): per-task gradients of the shared parameters, accumulated over micro-batches.

    Args:
        shared_params: the shared parameters, in a fixed order (the columns of ``J``).
        num_tasks: K.
        shard: across ranks, reduce-scatter ``J`` so that each rank owns ``P/W`` columns of every row, form
            the partial Gram on them, all-reduce only the K×K Gram and all-gather the combined update
            (elements sent per rank ≈ ``(K+1)·P`` instead of ``2·K·P``; the Gram and combination work is
            split W ways). ``False`` all-reduces the whole ``J`` and every rank repeats the Gram. ``None``:
            :func:`default_sharding` (on with NCCL, off with gloo).
        dtype: ``J``'s storage, ``torch.float32`` or ``torch.bfloat16`` (half the memory and traffic; each
            stored gradient keeps 8 significant bits, as in a bf16 mixed-precision run). The Gram and the
            update are computed in float32 from it either way, and the update written to ``.grad`` is float32.
        row_sparse: parameters (by position) to hold row by row, with the :class:`LookedUpRows` recording their
            lookups (:func:`vocabulary_embeddings`): only the rows recorded in a step are kept (per task, outside
            the K × P storage), enter the Gram and are combined; the other rows are zero in ``J`` and in the update.
            Run the step's forwards under :meth:`recording_rows`. The first step checks every task's gradient to
            be zero outside the recorded rows; a parameter whose gradient is not (the matrix is also used outside
            its ``nn.Embedding`` modules) goes back into the storage, with a warning, on every rank. Across ranks
            only the rows some rank looked up are sent. Ignored by a sharded buffer (its columns are split across
            ranks).
    """

    def __init__(self, shared_params: Sequence[torch.nn.Parameter], num_tasks: int, shard: bool | None = None,
                 dtype: torch.dtype = torch.float32, row_sparse: Mapping[int, LookedUpRows] | None = None) -> None:
        if not shared_params:
            raise ValueError("No shared parameters: per-task gradient combination needs a shared encoder.")
        if str(dtype).removeprefix("torch.") not in BUFFER_DTYPES:
            raise ValueError(f"The per-task gradient buffer's dtype must be one of {BUFFER_DTYPES}, got {dtype}.")
        self.params = list(shared_params)
        self.numel = _flat_numel(self.params)
        self.world = dist.get_world_size() if distributed() else 1
        self.shard = default_sharding() if shard is None else shard
        self._offsets = [0]  # parameter i's columns of J (and of the update): offsets[i] … offsets[i + 1]
        for param in self.params:
            self._offsets.append(self._offsets[-1] + param.numel())
        self._rows = {} if self.sharded else dict(row_sparse or {})
        self._tracked = tuple(sorted(self._rows))  # as given: every rank makes the same ones dense (_agree_on_rows)
        self._compact = {i: _CompactRows(num_tasks, self.params[i], dtype) for i in self._tracked}
        self._checking_rows = bool(self._rows)  # the first step: check the recorded rows against the gradients
        self._allocate(num_tasks, dtype)
        # A row is written (copy) by its first micro-batch and accumulated (add) after: no zeroing pass.
        self.seen = torch.zeros(num_tasks, dtype=torch.bool)
        self.touched = [False] * len(self.params)
        self._owned: torch.Tensor | None = None  # after reduce(): the stored columns this rank holds, all ranks summed
        self._gram: torch.Tensor | None = None
        self._update: torch.Tensor | None = None  # Σ_k w_k J_k (P), kept between steps: see write_combination
        self.elements_sent = 0  # by this rank in the last step's collectives (ring algorithm count)

    def _allocate(self, num_tasks: int, dtype: torch.dtype) -> None:
        """The storage of the parameters not held row by row: (W, K, S), rank r's columns of every row one
        contiguous block, so that the reduce-scatter sends the buffer itself. Unsharded W = 1: the stored ``J`` is
        ``_storage[0]``."""
        stored = [p for i, p in enumerate(self.params) if i not in self._compact]
        self.stored_numel = _flat_numel(stored)
        chunks = self.world if self.sharded else 1
        width = -(-self.stored_numel // chunks)  # S columns per rank (sharded: padded to W·S)
        self.columns = chunks * width
        self._storage = torch.empty(chunks, num_tasks, width, device=self.params[0].device, dtype=dtype)
        if self.columns > self.stored_numel:
            self._storage[-1, :, self.stored_numel - (chunks - 1) * width:].zero_()  # the padding stays zero
        segments = iter(_column_segments(stored, width))
        self._segments = [[] if i in self._compact else next(segments) for i in range(len(self.params))]
        # Runs of consecutive stored parameters: (first stored column, first column of J, length).
        self._runs, stored_offset = [], 0
        for i, param in enumerate(self.params):
            if i in self._compact:
                continue
            if self._runs and self._runs[-1][1] + self._runs[-1][2] == self._offsets[i]:
                start, first, length = self._runs[-1]
                self._runs[-1] = (start, first, length + param.numel())
            else:
                self._runs.append((stored_offset, self._offsets[i], param.numel()))
            stored_offset += param.numel()

    def recording_rows(self) -> contextlib.AbstractContextManager:
        """Record the rows the forwards inside look up (the buffer's ``row_sparse`` parameters)."""
        stack = contextlib.ExitStack()
        for looked_up in self._rows.values():
            stack.enter_context(looked_up.recording())
        return stack

    @property
    def num_tasks(self) -> int:
        return self._storage.shape[1]

    @property
    def _stored_jacobian(self) -> torch.Tensor:
        """This rank's stored columns of ``J`` (K × stored columns; a copy when sharded)."""
        if self._storage.shape[0] == 1:
            return self._storage[0, :, : self.stored_numel]
        return self._storage.transpose(0, 1).reshape(self.num_tasks, self.columns)[:, : self.stored_numel]

    @property
    def jacobian(self) -> torch.Tensor:
        """This rank's ``J`` (K × P) before :meth:`reduce` (a copy when sharded or with row-sparse parameters;
        after a sharded reduction, :meth:`task_gradients` gives the reduced one)."""
        stored = self._stored_jacobian
        if not self._compact:
            return stored
        full = stored.new_zeros(self.num_tasks, self.numel)
        for start, first, length in self._runs:
            full[:, first : first + length] = stored[:, start : start + length]
        for i, compact in self._compact.items():
            columns = full[:, self._offsets[i] : self._offsets[i + 1]].view(self.num_tasks, -1, compact.row_length)
            columns[:, compact.rows] = compact.used
        return full

    @property
    def dtype(self) -> torch.dtype:
        """``J``'s storage dtype (the Gram and the update are formed in float32/float64 whatever it is)."""
        return self._storage.dtype

    @property
    def nbytes(self) -> int:
        """Memory held by ``J`` (the stored K × P rows, padding included, and the row-sparse parameters' rows)."""
        compact = sum(c.values.numel() * c.values.element_size() for c in self._compact.values())
        return self._storage.numel() * self._storage.element_size() + compact

    @property
    def sharded(self) -> bool:
        return self.shard and self.world > 1

    @property
    def row_sparse(self) -> tuple[int, ...]:
        """Positions of the parameters held row by row (those of ``row_sparse`` not found used elsewhere)."""
        return tuple(sorted(self._compact))

    def differentiated(self) -> Differentiated:
        """What a task's backward should differentiate: the shared parameters, except the row-sparse ones whose
        lookups were recorded exactly (after the first step), for which the lookups' outputs are differentiated
        instead. Their ``∂L/∂output`` (B·T rows) is what autograd scatters into a dense V-row ``∂L/∂weight``; added
        into the row slots directly, it spares each task that zero-filled V-row matrix."""
        through_lookups = [i for i in self._compact if not self._checking_rows and self._rows[i].lookups]
        params = [i for i in range(len(self.params)) if i not in through_lookups]
        lookups = [(i, lookup) for i in through_lookups for lookup in self._rows[i].lookups]
        tensors = [self.params[i] for i in params] + [lookup.output for _, lookup in lookups]
        return Differentiated(params, lookups, tensors)

    def add_differentiated(self, task_index: int, plan: Differentiated,
                           grads: Sequence[torch.Tensor | None]) -> None:
        """Add one task's gradients of ``plan.tensors`` (:meth:`differentiated`; ``None`` means zero)."""
        param_grads: list[torch.Tensor | None] = [None] * len(self.params)
        for i, grad in zip(plan.params, grads[: len(plan.params)], strict=True):
            param_grads[i] = grad
        self.add(task_index, param_grads)
        for (i, lookup), grad in zip(plan.lookups, grads[len(plan.params):], strict=True):
            if grad is not None:
                self._add_lookup(task_index, i, lookup, grad)
                self.touched[i] = True

    def _add_lookup(self, task_index: int, i: int, lookup: Lookup, grad: torch.Tensor) -> None:
        """Add ``∂L/∂output`` of one lookup into the slots of its rows (repeated rows summed)."""
        compact = self._compact[i]
        values = grad.reshape(-1, compact.row_length)
        if lookup.kept is not None:
            values = values[lookup.kept]
        summed = values.new_zeros(len(lookup.rows), compact.row_length, dtype=torch.float32)
        summed.index_add_(0, lookup.position, values.float())  # a repeated row in float32, as autograd sums it
        compact.add(task_index, lookup.rows, summed)

    @profiled("hf_mtl::buffer_add")
    def add(self, task_index: int, grads: Sequence[torch.Tensor | None]) -> None:
        """Add one task's gradient (aligned with the shared parameters; ``None`` means zero)."""
        if len(grads) != len(self.params):
            raise ValueError(f"{len(grads)} gradients for {len(self.params)} shared parameters.")
        first = not bool(self.seen[task_index])
        for i, grad in enumerate(grads):
            if grad is not None and i in self._compact and self._rows_hold(i, grad):
                rows = self._rows[i].indices()
                self._compact[i].add(task_index, rows, grad.reshape(grad.shape[0], -1).index_select(0, rows))
                self.touched[i] = True
                continue
            rows = self._storage[:, task_index]  # (W, S)
            flat = None if grad is None else grad.reshape(-1)
            for chunk, start, source, length in self._segments[i]:
                target = rows[chunk, start : start + length]
                if flat is not None:
                    piece = flat[source : source + length]
                    if first:
                        target.copy_(piece)
                    else:
                        target.add_(piece.to(target.dtype))
                elif first:
                    target.zero_()
            if grad is not None:
                self.touched[i] = True
        self.seen[task_index] = True

    def _rows_hold(self, i: int, grad: torch.Tensor) -> bool:
        """True unless, in the first step, parameter ``i``'s gradient is nonzero outside the recorded rows (then
        it goes back into the storage)."""
        if self._checking_rows and bool((grad.reshape(grad.shape[0], -1).ne(0).any(1) & ~self._rows[i].mask).any()):
            logger.warning("Shared parameter %d (shape %s) has gradient rows no nn.Embedding lookup recorded "
                           "(the matrix is also used elsewhere): its per-task gradients are kept dense.", i,
                           tuple(self.params[i].shape))
            self._make_dense(i)
            return False
        return True

    def _make_dense(self, i: int) -> None:
        """Hold parameter ``i`` in the storage again, its rows so far (zero elsewhere) copied in; the storage is
        reallocated (rare: a matrix found used outside its lookups in the first step)."""
        full = self.jacobian  # K × P: the stored columns and the rows so far
        del self._compact[i], self._rows[i]
        self._allocate(self.num_tasks, self.dtype)
        stored = self._stored_jacobian
        for start, first, length in self._runs:
            stored[:, start : start + length] = full[:, first : first + length]

    @profiled("hf_mtl::reduce")
    def reduce(self, extra: torch.Tensor | None = None) -> torch.Tensor | None:
        """Average ``J`` and ``extra`` (the flattened task-specific grads) over ranks and form the Gram.

        Returns ``extra`` averaged over ranks. Tasks seen on any rank and parameters touched on any rank
        count as seen / touched everywhere.
        """
        self._zero_unseen_rows()  # this rank's unwritten rows must add zeros, not stale memory
        self.elements_sent = 0
        if not distributed():
            self._owned = self._stored_jacobian
            self._gram = self._blocked_gram(self._owned)
            return extra
        if self.sharded:
            return self._reduce_sharded(extra)
        world = self.world
        if self._checking_rows:
            self._agree_on_rows()
        # First the seen/touched flags, the looked-up rows of the row-sparse parameters (their union over ranks is
        # what to send) and the heads' gradients, in float32 whatever J's dtype; then J in place.
        flags = self._flags()
        masks = [self._rows[i].mask.to(flags.device, torch.float32) for i in self._compact]
        small = torch.cat([flags, *masks] + ([] if extra is None else [extra.to(torch.float32)]))
        self._all_reduce(small)
        self._set_flags(small[: len(flags)])
        offset = len(flags)
        for compact, mask in zip(self._compact.values(), masks, strict=True):
            union = torch.nonzero(small[offset : offset + len(mask)]).flatten()
            offset += len(mask)
            slots = compact.slot_of_row[union]
            held = slots >= 0
            values = compact.values.new_zeros(self.num_tasks, len(union), compact.row_length)
            values[:, held] = compact.values[:, slots[held]]
            self._all_reduce(values)
            compact.replace(union, values.div_(world))
        stored = self._storage.view(-1)  # no padding when unsharded
        self._all_reduce(stored)
        stored.div_(world)
        self._owned = self._stored_jacobian
        self._gram = self._blocked_gram(self._owned)
        return None if extra is None else small[offset:].div_(world).to(extra.dtype)

    def _agree_on_rows(self) -> None:
        """At the first step's end: a matrix one rank found used elsewhere goes back into every rank's storage
        (the others' rows are exact as they are, their gradients being zero outside them)."""
        dense = torch.tensor([float(i not in self._compact) for i in self._tracked], device=self._storage.device)
        self._all_reduce(dense)
        for i, flag in zip(self._tracked, dense.tolist(), strict=True):
            if flag > 0 and i in self._compact:
                self._make_dense(i)

    def _reduce_sharded(self, extra: torch.Tensor | None) -> torch.Tensor | None:
        world, k = self.world, self.num_tasks
        width = self.columns // world
        # Rank r receives the sum of every rank's block r: J[:, r·S:(r+1)·S].
        owned = torch.empty(k, width, dtype=self._storage.dtype, device=self._storage.device)
        dist.reduce_scatter_single(owned.view(-1), self._storage.view(-1))
        self.elements_sent += _ring_elements("reduce_scatter", self._storage.numel(), world)
        owned.div_(world)
        self._owned = owned
        # One small all-reduce: the partial Grams, the seen/touched flags and the task-specific gradients.
        small = [blocked_gram(owned).reshape(-1), self._flags().double()]
        if extra is not None:
            small.append(extra.double())
        flat = torch.cat(small)
        self._all_reduce(flat)
        self._gram = flat[: k * k].view(k, k).clone()
        self._set_flags(flat[k * k : k * k + k + len(self.params)])
        if extra is None:
            return None
        return flat[k * k + k + len(self.params):].div_(world).to(extra.dtype)

    def _all_reduce(self, tensor: torch.Tensor) -> None:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        self.elements_sent += _ring_elements("all_reduce", tensor.numel(), self.world)

    def _flags(self) -> torch.Tensor:
        flags = torch.cat([self.seen.float(), torch.tensor(self.touched, dtype=torch.float32)])
        return flags.to(self._storage.device)

    def _set_flags(self, summed: torch.Tensor) -> None:
        positive = (summed > 0).cpu()
        self.seen = positive[: self.num_tasks].clone()
        self.touched = positive[self.num_tasks:].tolist()

    def gram(self) -> torch.Tensor:
        """``G = J Jᵀ`` in float64 (over all ranks after :meth:`reduce`); rows of tasks not seen are zero."""
        if self._gram is None:
            self._zero_unseen_rows()
            self._gram = self._blocked_gram(self._stored_jacobian)
        return self._gram

    def _blocked_gram(self, stored: torch.Tensor) -> torch.Tensor:
        """:func:`blocked_gram` of the stored columns plus the row-sparse parameters' rows."""
        gram = blocked_gram(stored)
        for compact in self._compact.values():
            gram += blocked_gram(compact.used.flatten(1))
        return gram

    @profiled("hf_mtl::write_combination")
    def write_combination(self, weights: torch.Tensor, scale: float = 1.0) -> None:
        """Set each shared parameter's ``.grad`` to its slice of ``scale · Σ_k w_k J_k``.

        Parameters no task's loss reached on any rank (e.g. an unused pooler) keep ``.grad = None``, as after
        a plain backward, so optimizers skip them. Sharded: each rank combines its own columns and one
        all-gather assembles the update.
        """
        combined = self._update_storage()
        if self.sharded:
            owned = self._combined_rows(weights, scale, out=torch.empty_like(self._owned[0], dtype=torch.float32))
            dist.all_gather_single(combined, owned)
            self.elements_sent += _ring_elements("all_gather", combined.numel(), self.world)
        else:
            self._combined_rows(weights, scale, out=combined[: self.numel])
        offset = 0
        for param, touched in zip(self.params, self.touched, strict=True):
            n = param.numel()
            param.grad = combined[offset : offset + n].view_as(param).to(param.dtype) if touched else None
            offset += n

    def _update_storage(self) -> torch.Tensor:
        """The tensor the update is written to (P floats, or the sharded storage's padded columns), allocated once:
        the parameters' ``.grad`` are views of it until the next step overwrites it, as DDP's gradient buckets
        are. A fresh tensor per step cost more than the combination itself on CPU (page faults;
        ``benchmarks/step_phases.py``)."""
        if self._update is None:
            size = self.columns if self.sharded else self.numel
            self._update = torch.empty(size, dtype=torch.float32, device=self._storage.device)
        return self._update

    def _combined_rows(self, weights: torch.Tensor, scale: float, out: torch.Tensor) -> torch.Tensor:
        """``out = scale · Σ_k w_k J_k`` over the columns this rank holds (rows with weight 0 are left out: they
        may hold NaN, and ``0 · NaN`` is NaN)."""
        rows = self._owned if self._owned is not None else self._stored_jacobian
        weights = weights.to(torch.float32).to(rows.device)
        active = torch.nonzero(weights).flatten().tolist()
        runs = self._runs if self._compact else [(0, 0, rows.shape[1])]  # a sharded rank's block: one run
        for start, first, length in runs:
            _combine(rows[:, start : start + length], weights, active, out[first : first + length])
        for i, compact in self._compact.items():
            target = out[self._offsets[i] : self._offsets[i + 1]].view(-1, compact.row_length)
            target.zero_()  # not only last step's rows: .grad may have been scaled in place since
            combined = _combine(compact.used.flatten(1), weights, active, out.new_empty(compact.used[0].numel()))
            target.index_copy_(0, compact.rows, combined.view(-1, compact.row_length))
        if scale != 1.0:
            out.mul_(scale)
        return out

    def task_gradients(self) -> torch.Tensor:
        """The whole ``J`` (K × P) after :meth:`reduce` (sharded: one all-gather of every rank's columns)."""
        if not self.sharded or self._owned is None:
            return self.jacobian
        k, world = self.num_tasks, self.world
        gathered = torch.empty(world, k, self.columns // world, dtype=self._owned.dtype, device=self._owned.device)
        dist.all_gather_single(gathered.view(-1), self._owned.contiguous().view(-1))
        return gathered.transpose(0, 1).reshape(k, self.columns)[:, : self.numel]

    def _zero_unseen_rows(self) -> None:
        for k in torch.nonzero(~self.seen).flatten().tolist():
            self._storage[:, k].zero_()
            for compact in self._compact.values():
                compact.used[k].zero_()

    def reset(self) -> None:
        for looked_up in self._rows.values():
            looked_up.clear()
        for compact in self._compact.values():
            compact.clear()
        self._checking_rows = False
        self.seen = torch.zeros(self.num_tasks, dtype=torch.bool)
        self.touched = [False] * len(self.params)
        self._owned = None
        self._gram = None


class ShardedParameterBuffer(TaskGradientBuffer):
    """``J`` over parameters FSDP2 (``fully_shard``) already shards: each rank holds its shards' columns.

    FSDP's reduce-scatter leaves in every rank's ``.grad`` its shard of the gradient averaged over ranks, so
    :meth:`add` takes those local shards, no ``J`` element crosses ranks again, and :meth:`reduce` all-reduces
    only the partial Grams (K×K) and the seen/touched flags. The update ``Σ_k w_k J_k`` is written into each
    parameter's ``.grad`` as a sharded ``DTensor`` like the ones FSDP produces, for the optimizer to step on
    the shards. Elements sent per rank and step: FSDP's K reduce-scatters of P plus the K×K Gram (a plain FSDP
    step: one reduce-scatter of P).

    Args:
        shared_params: the shared parameters, ``DTensor`` s sharded by ``fully_shard``.
        num_tasks: K.
        dtype: ``J``'s storage, as in :class:`TaskGradientBuffer`.
    """

    def __init__(self, shared_params: Sequence[torch.nn.Parameter], num_tasks: int,
                 dtype: torch.dtype = torch.float32) -> None:
        from torch.distributed.tensor import DTensor

        plain = [i for i, p in enumerate(shared_params) if not isinstance(p, DTensor)]
        if plain:
            raise ValueError(f"ShardedParameterBuffer needs FSDP2-sharded (DTensor) parameters; parameter(s) at "
                             f"position(s) {plain[:5]} are plain tensors.")
        self.sharded_params = list(shared_params)
        super().__init__([p.to_local() for p in self.sharded_params], num_tasks, shard=False, dtype=dtype)

    @profiled("hf_mtl::reduce")
    def reduce(self, extra: torch.Tensor | None = None) -> torch.Tensor | None:
        """Sum the partial Grams and the flags over ranks (``J``'s rows are FSDP's averages already)."""
        if extra is not None:
            raise ValueError("Under FSDP the task-specific gradients are reduced by FSDP itself; pass no `extra`.")
        self._zero_unseen_rows()
        self.elements_sent = 0
        self._owned = self.jacobian
        k = self.num_tasks
        small = torch.cat([blocked_gram(self._owned).reshape(-1), self._flags().double()])
        if distributed():
            self._all_reduce(small)
        self._gram = small[: k * k].view(k, k).clone()
        self._set_flags(small[k * k :])
        return None

    @profiled("hf_mtl::write_combination")
    def write_combination(self, weights: torch.Tensor, scale: float = 1.0) -> None:
        """Set each parameter's ``.grad`` to its shard of ``scale · Σ_k w_k J_k`` (``None`` where no task's
        loss reached the parameter on any rank)."""
        combined = self._combined_rows(weights, scale, out=self._update_storage()[: self.numel])
        for param, piece, touched in zip(self.sharded_params, self._split(combined), self.touched, strict=True):
            param.grad = self._as_sharded(param, piece.to(param.dtype)) if touched else None

    def task_gradients(self) -> torch.Tensor:
        """The whole ``J`` (K × P, parameters in order), gathered from every rank's shards."""
        rows = self._owned if self._owned is not None else self.jacobian
        return torch.stack([
            torch.cat([self._as_sharded(param, piece).full_tensor().reshape(-1)
                       for param, piece in zip(self.sharded_params, self._split(row), strict=True)])
            for row in rows
        ])

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """``flat`` (this rank's columns) cut into the local shapes of the parameters' shards."""
        sizes = [local.numel() for local in self.params]
        return [piece.view_as(local) for piece, local in zip(flat.split(sizes), self.params, strict=True)]

    @staticmethod
    def _as_sharded(param: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        from torch.distributed.tensor import DTensor

        return DTensor.from_local(local.contiguous(), param.device_mesh, param.placements, run_check=False,
                                  shape=param.shape, stride=param.stride())


def _combine(rows: torch.Tensor, weights: torch.Tensor, active: list[int], out: torch.Tensor) -> torch.Tensor:
    """``out = Σ_{k ∈ active} w_k rows_k`` in float32 (``active``: the tasks of nonzero weight)."""
    for start, piece in _float32_pieces(rows):
        target = out[start : start + piece.shape[1]]
        if len(active) == rows.shape[0]:
            torch.mv(piece.t(), weights, out=target)
        else:
            torch.mul(piece[active[0]], weights[active[0]], out=target)
            for k in active[1:]:
                target.add_(piece[k], alpha=float(weights[k]))
    return out


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
