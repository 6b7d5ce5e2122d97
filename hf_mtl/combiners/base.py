"""The combiner contract: a small function of the K×K Gram matrix (and losses) returning task weights.

For tasks ``k = 1..K`` with shared-parameter gradients ``g_k``, the update direction is
``u = Σ_k w_k g_k``; a combiner only chooses ``w`` (notation and the table of methods: docs/combiners.md).

Every combiner validates its inputs, converts them once to float64 NumPy (K is tiny; the Gram matrix may
arrive on a GPU), solves there, and returns the weights as a tensor on the input's device and dtype.
Subclasses implement :meth:`Combiner.compute_weights`.

From K = 16 tasks on, the solve runs with the BLAS thread pool limited to one thread (``threadpoolctl``, ~30 µs):
threads bring nothing at this size, and while the training process keeps the cores busy a multi-threaded OpenBLAS
eigendecomposition of a 64×64 matrix was measured at ~50 ms instead of ~0.5 ms. Smaller problems stay below
OpenBLAS's threading threshold and skip the limiter.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from threadpoolctl import ThreadpoolController

if TYPE_CHECKING:
    import torch


class Combiner:
    """Base class of every combiner.

    Subclasses set the class attributes and implement :meth:`compute_weights`.

    Attributes:
        name: registry name (``get_combiner(name)``).
        needs_gradients: ``True`` when the weights depend on the Gram matrix; ``False`` for loss-based
            methods, for which the trainer does one plain backward of ``Σ w_k L_k`` and passes ``gram=None``.
        needs_losses: ``True`` when ``losses`` must be passed.
        stateful: ``True`` when :meth:`state_dict` carries something that must survive a checkpoint.
        last_info: per-call diagnostics of the last call (solver iterations, duality gap, ...), cheap to
            compute; plain Python values, meant for logging.
    """

    name: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = True
    needs_losses: ClassVar[bool] = False
    stateful: ClassVar[bool] = False

    def __init__(self) -> None:
        self.last_info: dict[str, Any] = {}

    def __call__(self, gram: torch.Tensor | None = None, losses: torch.Tensor | None = None) -> torch.Tensor:
        """Weights ``w`` of shape ``(K,)`` on ``gram``'s (or ``losses``') device and dtype.

        Raises:
            ValueError: a required input is missing, has the wrong shape, or holds a non-finite value
                (the message names the task index).
        """
        if gram is None and losses is None:
            raise ValueError(f"Combiner {self.name!r} needs `gram` or `losses` to know the number of tasks.")
        if self.needs_gradients and gram is None:
            raise ValueError(f"Combiner {self.name!r} combines gradients: pass the (K, K) Gram matrix `gram`.")
        if self.needs_losses and losses is None:
            raise ValueError(f"Combiner {self.name!r} needs the (K,) tensor of task `losses`.")
        gram_np = None if gram is None else gram_to_numpy(gram, self.name)
        num_tasks = gram_np.shape[0] if gram_np is not None else _num_tasks_of_losses(losses, self.name)
        losses_np = None if losses is None else losses_to_numpy(losses, num_tasks, self.name)
        self.last_info = {}
        single_thread = _blas_controller().limit(limits=1, user_api="blas") if num_tasks >= 16 else contextlib.nullcontext()
        with single_thread:
            weights = np.asarray(self.compute_weights(gram_np, losses_np, num_tasks), dtype=np.float64)
        if weights.shape != (num_tasks,) or not np.all(np.isfinite(weights)):
            raise FloatingPointError(
                f"Combiner {self.name!r} produced invalid weights {weights.tolist()} for {num_tasks} tasks "
                "(this is a bug: please report the Gram matrix and losses)."
            )
        import torch  # lazily: listing the combiners (``hf-mtl combiners``) needs no torch

        ref = gram if gram is not None else losses
        dtype = ref.dtype if ref.dtype.is_floating_point else torch.get_default_dtype()
        return torch.as_tensor(weights, dtype=dtype, device=ref.device)

    def compute_weights(self, gram: np.ndarray | None, losses: np.ndarray | None, num_tasks: int) -> np.ndarray:
        """Weights in float64 from the validated float64 ``gram`` (symmetrised) and ``losses``."""
        raise NotImplementedError

    def restricted(self, active: Sequence[int]) -> Combiner | None:
        """The combiner for the sub-problem of the tasks ``active`` (sorted indices into the full task list).

        The trainer leaves out of a step the tasks with no, a zero, or a non-finite gradient; combiners whose
        options refer to task indices remap them here. ``None`` means the sub-problem has nothing to optimise
        (the step is skipped). Stateful combiners are never restricted (the trainer skips such steps).
        """
        return self

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"Combiner {self.name!r} is stateless but got state keys {sorted(state)}.")

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "last_info")
        return f"{type(self).__name__}({options})"


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """Created on first use, after NumPy/SciPy have loaded their BLAS."""
    return ThreadpoolController()


def gram_to_numpy(gram: torch.Tensor, combiner: str = "") -> np.ndarray:
    """Validated, symmetrised float64 copy of a ``(K, K)`` Gram matrix.

    Raises:
        ValueError: not a square matrix, a non-finite entry (names the task), a negative diagonal entry
            (a squared norm cannot be negative), or a clearly asymmetric matrix.
    """
    import torch

    who = f"Combiner {combiner!r}: " if combiner else ""
    if not isinstance(gram, torch.Tensor):
        raise ValueError(f"{who}`gram` must be a torch.Tensor, got {type(gram).__name__}.")
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] == 0:
        raise ValueError(f"{who}`gram` must be a non-empty square (K, K) matrix, got shape {tuple(gram.shape)}.")
    matrix = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not np.isfinite(matrix).all():
        task = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise ValueError(
            f"{who}non-finite Gram matrix: row {task} (task index {task}) holds {matrix[task].tolist()}; "
            "that task's loss or gradient is NaN/inf."
        )
    diag = matrix.diagonal()
    scale = float(np.abs(matrix).max())
    if diag.min() < -1e-6 * scale:
        task = int(np.argmin(diag))
        raise ValueError(f"{who}`gram` is not a Gram matrix: diagonal entry {task} (task index {task}) is {diag[task]} < 0.")
    asymmetry = float(np.abs(matrix - matrix.T).max())
    if asymmetry > 1e-4 * scale:
        raise ValueError(f"{who}`gram` is not symmetric: max |G - Gᵀ| = {asymmetry:.3g} for max |G| = {scale:.3g}.")
    symmetric = 0.5 * (matrix + matrix.T)  # a new array: the input tensor's memory is never written
    np.fill_diagonal(symmetric, np.maximum(diag, 0.0))
    return symmetric


def _num_tasks_of_losses(losses: torch.Tensor, combiner: str) -> int:
    import torch

    if not isinstance(losses, torch.Tensor) or losses.ndim != 1 or losses.shape[0] == 0:
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(f"Combiner {combiner!r}: `losses` must be a non-empty (K,) tensor, got {shape}.")
    return int(losses.shape[0])


def losses_to_numpy(losses: torch.Tensor, num_tasks: int, combiner: str = "") -> np.ndarray:
    """Validated float64 copy of a ``(K,)`` loss vector.

    Raises:
        ValueError: wrong shape (K must match the Gram matrix) or a non-finite loss (names the task).
    """
    if _num_tasks_of_losses(losses, combiner) != num_tasks:
        raise ValueError(
            f"Combiner {combiner!r}: `losses` has shape {tuple(losses.shape)} but the Gram matrix has {num_tasks} tasks."
        )
    import torch

    values = losses.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        task = int(bad[0])
        raise ValueError(f"Combiner {combiner!r}: loss of task index {task} is {values[task]} (non-finite).")
    return values


def require_positive_losses(losses: np.ndarray, combiner: str, why: str) -> None:
    """Raise a ValueError naming the first task whose loss is not strictly positive."""
    bad = np.flatnonzero(losses <= 0)
    if bad.size:
        task = int(bad[0])
        raise ValueError(f"Combiner {combiner!r}: {why}, but task index {task} has loss {losses[task]}.")


def check_num_tasks(expected: int | None, got: int, combiner: str) -> None:
    """Stateful combiners keep per-task state: the number of tasks must not change between calls."""
    if expected is not None and expected != got:
        raise ValueError(
            f"Combiner {combiner!r} holds state for {expected} tasks but was called with {got}; "
            "a stateful combiner must see the same tasks every step."
        )
