"""Diagnostics of multi-task training: a structured history of the per-task losses, weights and Gram readings.

At every logging step :meth:`hf_mtl.MultiTaskTrainer.log` adds, next to the Trainer's own keys:

* ``loss_<task>``: the task's mean loss over the logging interval;
* ``weight_<task>``: the combiner weight ``w_k`` of the last optimizer step of the interval;
* ``grad_norm_<task>``: ``‖g_k‖ = √G_kk`` at that step (gradient combiners only);
* ``cosine_<a>__<b>``: ``G_ab / √(G_aa G_bb)`` at that step (gradient combiners only).

Those keys already reach every ``report_to`` logger (TensorBoard shows them as ``train/loss_<task>``, ...)
and ``trainer_state.json``'s ``log_history``. :class:`MultiTaskDiagnosticsCallback` adds no new scalar:
it turns each logging step into one record holding the K×K cosine matrix (rather than K(K-1)/2 keys)
and appends it to ``mtl_history.jsonl`` in ``output_dir`` (main process only), the file that
:mod:`hf_mtl.plotting` reads. The format is described in ``docs/diagnostics.md``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

HISTORY_FILE = "mtl_history.jsonl"
LOSS_PREFIX, WEIGHT_PREFIX, GRAD_NORM_PREFIX, COSINE_PREFIX = "loss_", "weight_", "grad_norm_", "cosine_"
PAIR_SEPARATOR = "__"
EVAL_PREFIX = "eval_"

logger = logging.getLogger(__name__)


def infer_task_names(logs: Mapping[str, Any]) -> list[str]:
    """Task names in the trainer's order, read off the ``loss_<task>`` keys of one training log entry.

    No key of ``transformers.Trainer``'s own logs starts with ``loss_``, so the prefix is unambiguous.
    """
    return [key[len(LOSS_PREFIX):] for key in logs if key.startswith(LOSS_PREFIX)]


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _per_task(logs: Mapping[str, Any], prefix: str, tasks: Sequence[str]) -> dict[str, float | None] | None:
    if not any(f"{prefix}{name}" in logs for name in tasks):
        return None
    return {name: _finite_or_none(logs.get(f"{prefix}{name}")) for name in tasks}


def cosine_matrix(logs: Mapping[str, Any], tasks: Sequence[str]) -> list[list[float | None]] | None:
    """The K×K cosine matrix of one logging step, or ``None`` when the step logged no Gram.

    An entry is ``None`` where the cosine is undefined: a task with a zero or non-finite gradient norm
    (the trainer logs ``0.0`` there; the history keeps it apart from a true right angle) or a missing key.
    """
    norms = _per_task(logs, GRAD_NORM_PREFIX, tasks)
    if norms is None:
        return None
    defined = [norms[name] is not None and norms[name] > 0 for name in tasks]
    matrix: list[list[float | None]] = [[None] * len(tasks) for _ in tasks]
    for i, a in enumerate(tasks):
        matrix[i][i] = 1.0 if defined[i] else None
        for j in range(i + 1, len(tasks)):
            b = tasks[j]
            value = _finite_or_none(logs.get(f"{COSINE_PREFIX}{a}{PAIR_SEPARATOR}{b}"))
            if not (defined[i] and defined[j]):
                value = None
            matrix[i][j] = matrix[j][i] = value
    return matrix


def diagnostics_record(
    logs: Mapping[str, Any], step: int, epoch: float | None = None, tasks: Sequence[str] | None = None
) -> dict[str, Any] | None:
    """One history record from one ``Trainer.log`` entry, or ``None`` for an entry with nothing per task.

    Training entries (those with ``loss_<task>`` keys) give ``{"kind": "train", "step", "epoch", "tasks",
    "loss", "weight", "grad_norm", "cosine"}``; evaluation entries give ``{"kind": "eval", "step", "epoch",
    "metrics"}`` with every numeric ``eval_*`` key. Non-finite values are stored as ``null``.
    """
    if any(key.startswith(EVAL_PREFIX) for key in logs):
        metrics = {key: _finite_or_none(value) for key, value in logs.items()
                   if key.startswith(EVAL_PREFIX) and isinstance(value, int | float)}
        return {"kind": "eval", "step": int(step), "epoch": _finite_or_none(epoch), "metrics": metrics}
    names = list(tasks) if tasks else infer_task_names(logs)
    loss = _per_task(logs, LOSS_PREFIX, names) if names else None
    if loss is None:
        return None
    return {
        "kind": "train",
        "step": int(step),
        "epoch": _finite_or_none(epoch),
        "tasks": names,
        "loss": loss,
        "weight": _per_task(logs, WEIGHT_PREFIX, names),
        "grad_norm": _per_task(logs, GRAD_NORM_PREFIX, names),
        "cosine": cosine_matrix(logs, names),
    }


def records_from_log_history(log_history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """History records from ``trainer_state.json``'s ``log_history`` (each entry carries its ``step``)."""
    records = []
    for entry in log_history:
        if "step" not in entry:
            raise ValueError(f"log_history entry without a 'step' key: {sorted(entry)}")
        record = diagnostics_record(entry, entry["step"], entry.get("epoch"))
        if record is not None:
            records.append(record)
    return records


def read_history(path: str | os.PathLike, drop_partial_last_line: bool = False) -> list[dict[str, Any]]:
    """The records of a ``mtl_history.jsonl`` file; a malformed line raises naming its line number.

    With ``drop_partial_last_line``, a malformed *last* line without its newline (a process killed while
    appending it) is dropped with a warning instead.
    """
    records = []
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if drop_partial_last_line and number == len(lines) and not line.endswith("\n"):
                logger.warning("%s, line %d: dropping a partly written record (the run was killed while writing "
                               "it): %r", path, number, line[:80])
                break
            raise ValueError(f"{path}, line {number}: not a JSON record ({err}).") from None
        if not isinstance(record, dict) or record.get("kind") not in ("train", "eval") or "step" not in record:
            raise ValueError(f"{path}, line {number}: expected a record with 'kind' train/eval and 'step'.")
        records.append(record)
    return records


class MultiTaskDiagnosticsCallback(TrainerCallback):
    """Append one JSON record per logging step to ``<output_dir>/mtl_history.jsonl`` (main process only).

    The records are built from the keys :class:`~hf_mtl.MultiTaskTrainer` logs (see the module docstring),
    so the file and the Trainer's loggers always agree. A fresh ``train()`` truncates the file; a resumed
    one keeps the records up to the checkpoint's step and continues from there.

    Args:
        history_file: file name inside ``args.output_dir``.
    """

    def __init__(self, history_file: str = HISTORY_FILE) -> None:
        if not history_file or os.path.basename(history_file) != history_file:
            raise ValueError(f"history_file must be a plain file name inside output_dir, got {history_file!r}.")
        self.history_file = history_file
        self._tasks: list[str] | None = None

    def history_path(self, args: TrainingArguments) -> str:
        return os.path.join(args.output_dir, self.history_file)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs: Any
    ) -> None:
        names = getattr(model, "task_names", None)
        self._tasks = list(names) if names else None
        if not state.is_world_process_zero:
            return
        path = self.history_path(args)
        os.makedirs(args.output_dir, exist_ok=True)
        kept = []
        if state.global_step > 0 and os.path.isfile(path):  # resumed: drop what came after the checkpoint
            kept = [record for record in read_history(path, drop_partial_last_line=True)
                    if record["step"] <= state.global_step]
        with open(path, "w", encoding="utf-8") as handle:
            for record in kept:
                handle.write(json.dumps(record) + "\n")

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
        logs: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        record = diagnostics_record(logs, state.global_step, state.epoch, self._tasks)
        if record is None:
            return
        os.makedirs(args.output_dir, exist_ok=True)
        with open(self.history_path(args), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, allow_nan=False) + "\n")
