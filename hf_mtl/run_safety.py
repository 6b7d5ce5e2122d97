"""What keeps a run from losing or mixing work: its arguments, the output-directory lock, the fresh-start check.

* :class:`RunSafetyArguments` (mixed into ``MultiTaskTrainingArguments`` and ``LossMaskingTrainingArguments``):
  ``max_consecutive_skipped_steps`` and ``overwrite_output_dir`` (a field ``transformers`` ≥ 5 no longer has).
* :class:`OutputDirLock`: a lock file in ``output_dir`` naming the process (PID, host) that trains into it; a
  second run into the same folder is refused, naming that process; the lock of a dead process is taken over.
* :func:`prepare_fresh_output_dir`: a run that does not resume refuses a folder holding a previous run's
  checkpoints or ``mtl_history.jsonl`` unless ``overwrite_output_dir`` (which then deletes them).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from types import TracebackType

from hf_mtl.callbacks import HISTORY_FILE
from hf_mtl.checkpoints import checkpoint_steps

logger = logging.getLogger(__name__)

LOCK_FILE = ".hf_mtl.lock"


@dataclass
class RunSafetyArguments:
    """Fields that stop a run from ending wrong or overwriting another run; a mixin for ``TrainingArguments``."""

    max_consecutive_skipped_steps: int = field(
        default=10,
        metadata={"help": "Stop with an error after this many consecutive skipped optimizer steps (e.g. NaN losses "
                          "of a diverged model), naming the last good checkpoint; 0 disables the limit."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start a fresh run in an output_dir that holds a previous run's checkpoints or "
                          "mtl_history.jsonl, deleting them (otherwise that is an error)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.max_consecutive_skipped_steps) < 0:
            raise ValueError(
                f"max_consecutive_skipped_steps must be ≥ 0 (0 disables the limit), got "
                f"{self.max_consecutive_skipped_steps}."
            )
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                f"max_steps must be a positive number of optimizer steps (or -1 to train num_train_epochs), got "
                f"{self.max_steps}."
            )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class OutputDirLock:
    """``with OutputDirLock(output_dir):`` holds ``output_dir/.hf_mtl.lock`` (PID, host, start time).

    Another live process's lock is a ``RuntimeError`` naming it; the lock of a process that no longer runs on
    this host (killed) is taken over with a warning. ``enabled=False`` (non-main ranks) does nothing.
    """

    def __init__(self, output_dir: str, enabled: bool = True) -> None:
        self.path = os.path.join(output_dir, LOCK_FILE)
        self.enabled = enabled
        self.owner = {"pid": os.getpid(), "host": socket.gethostname()}
        self.held = False

    def _holder(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                holder = json.load(handle)
            return holder if isinstance(holder, dict) else None
        except (OSError, json.JSONDecodeError):
            return None

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({**self.owner, "started": time.strftime("%Y-%m-%d %H:%M:%S")}, handle)
        return True

    def acquire(self) -> None:
        if not self.enabled:
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        if not self._try_create():
            holder = self._holder()
            same_host = holder is not None and holder.get("host") == self.owner["host"]
            pid = holder.get("pid") if holder else None
            if holder is not None and not (same_host and isinstance(pid, int)
                                           and (pid == self.owner["pid"] or not _process_alive(pid))):
                raise RuntimeError(
                    f"Output directory {os.path.dirname(self.path)} is in use by another run: process {pid} on host "
                    f"{holder.get('host')!r} (started {holder.get('started', '?')}) holds {self.path}. Wait for it "
                    "to finish or choose another output_dir; if that process is gone, delete the lock file."
                )
            logger.warning("Taking over the stale lock %s of a process that no longer runs (%s).", self.path, holder)
            os.remove(self.path)
            if not self._try_create():
                raise RuntimeError(f"Output directory {os.path.dirname(self.path)}: another run took {self.path} "
                                   "at the same moment; choose another output_dir.")
        self.held = True

    def release(self) -> None:
        holder = self._holder() if self.held else None
        if holder is not None and holder.get("pid") == self.owner["pid"]:
            os.remove(self.path)
        self.held = False

    def __enter__(self) -> OutputDirLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()


def previous_run(output_dir: str) -> list[str]:
    """Names of what a previous run left in ``output_dir``: ``checkpoint-N`` folders and ``mtl_history.jsonl``."""
    found = [os.path.basename(path) for _, path in checkpoint_steps(output_dir)]
    if os.path.isfile(os.path.join(output_dir, HISTORY_FILE)):
        found.append(HISTORY_FILE)
    return found


def prepare_fresh_output_dir(output_dir: str, overwrite: bool, delete: bool = True) -> None:
    """Before a run that does not resume: refuse a folder holding a previous run, unless ``overwrite``; then
    delete what that run left (only where ``delete``: the main process)."""
    found = previous_run(output_dir)
    if not found:
        return
    if not overwrite:
        shown = ", ".join(found[:5]) + (f", … ({len(found)} in all)" if len(found) > 5 else "")
        raise ValueError(
            f"Output directory {output_dir} holds a previous run ({shown}). Resume it with "
            "resume_from_checkpoint=True (--resume_from_checkpoint True), or start over with "
            "overwrite_output_dir=True (--overwrite_output_dir True; deletes them), or choose another output_dir."
        )
    if delete:
        logger.warning("overwrite_output_dir: deleting the previous run's %s in %s.", ", ".join(found), output_dir)
        for name in found:
            path = os.path.join(output_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
