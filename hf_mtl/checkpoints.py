"""Checkpoint integrity: never resume from a checkpoint a killed process left half-written or a disk corrupted.

``Trainer`` writes a checkpoint file by file (weights, optimizer, scheduler, RNG, combiner state, then
``trainer_state.json``). A process killed in the middle leaves a folder that ``get_last_checkpoint`` still
picks, and from which ``Trainer`` silently resumes without, say, the optimizer, or fails with a raw
``SafetensorError`` naming no file. Here a checkpoint counts as complete only when every file the run needs is
there and readable: ``trainer_state.json`` parses, every ``*.safetensors`` header parses and covers the file,
``optimizer.pt``/``scheduler.pt`` (and ``pytorch_model.bin``) open as ``torch.save`` archives. The archives are
opened memory-mapped, which reads their index (where a truncated file fails) but no tensor data.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re

import torch
from safetensors import SafetensorError, safe_open

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
RNG_FILES = ("rng_state.pth",)


def _torch_file_problem(path: str) -> str | None:
    """Why the ``torch.save`` archive at ``path`` cannot be loaded (``None`` when its index reads)."""
    name = os.path.basename(path)
    if os.path.getsize(path) == 0:
        return f"{name} is empty"
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:  # readable, only refused by weights_only (a custom class): loadable
        return None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        return f"{name} is truncated or corrupt ({str(err).splitlines()[0]})"
    return None


def _safetensors_problem(path: str) -> str | None:
    """Why the safetensors file at ``path`` cannot be read (``None`` when its header parses and covers the file)."""
    try:
        with safe_open(path, framework="pt"):
            pass
    except (SafetensorError, OSError) as err:
        return f"{os.path.basename(path)} is truncated or corrupt ({err})"
    return None


def checkpoint_problems(path: str, needs_optimizer: bool = True, needs_combiner: bool = False,
                        adapter_subfolder: str | None = None) -> list[str]:
    """What is missing or broken in the checkpoint folder ``path`` (empty when it is complete); a model with an
    encoder adapter also needs ``adapter_subfolder/adapter_config.json`` and ``adapter_model.safetensors``."""
    if not os.path.isdir(path):
        return ["no such checkpoint folder"]
    problems = []
    names = sorted(os.listdir(path))
    if not any(name in names for name in WEIGHT_FILES):
        problems.append("no model weights (model.safetensors)")
    for name in names:
        if name.endswith(".safetensors"):
            problems.append(_safetensors_problem(os.path.join(path, name)))
        elif name.startswith("pytorch_model") and name.endswith(".bin"):
            problems.append(_torch_file_problem(os.path.join(path, name)))
    if adapter_subfolder is not None:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            file = os.path.join(path, adapter_subfolder, name)
            if not os.path.isfile(file):
                problems.append(f"no {adapter_subfolder}/{name} (the encoder's adapter)")
            elif name.endswith(".safetensors"):
                problem = _safetensors_problem(file)
                problems.append(problem and f"{adapter_subfolder}/{problem}")
    state_file = os.path.join(path, "trainer_state.json")
    try:
        with open(state_file, encoding="utf-8") as handle:
            json.load(handle)
    except FileNotFoundError:
        problems.append("no trainer_state.json")
    except json.JSONDecodeError as err:
        problems.append(f"trainer_state.json is truncated or corrupt ({err})")
    if needs_optimizer:
        for name in ("optimizer.pt", "scheduler.pt"):
            file = os.path.join(path, name)
            problems.append(_torch_file_problem(file) if os.path.isfile(file) else f"no {name}")
    if needs_combiner and not os.path.isfile(os.path.join(path, "combiner_state.pt")):
        problems.append("no combiner_state.pt (the combiner is stateful)")
    return [problem for problem in problems if problem]


def checkpoint_steps(output_dir: str) -> list[tuple[int, str]]:
    """``(step, path)`` of every ``checkpoint-N`` folder in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(
        (int(m.group(1)), os.path.join(output_dir, name)) for name in os.listdir(output_dir)
        if (m := _CHECKPOINT.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    )


def last_complete_checkpoint(output_dir: str, needs_optimizer: bool = True, needs_combiner: bool = False,
                             max_step: int | None = None, quiet: bool = False,
                             adapter_subfolder: str | None = None) -> str | None:
    """The newest ``checkpoint-N`` (``N ≤ max_step`` if given) in ``output_dir`` with nothing missing or broken;
    newer incomplete ones are skipped with a warning (unless ``quiet``)."""
    for step, path in reversed(checkpoint_steps(output_dir)):
        if max_step is not None and step > max_step:
            continue
        problems = checkpoint_problems(path, needs_optimizer, needs_combiner, adapter_subfolder)
        if not problems:
            return path
        if not quiet:
            logger.warning("Skipping incomplete or corrupt checkpoint %s: %s.", path, "; ".join(problems))
    return None


def resume_argument(value: str | bool | None) -> str | bool | None:
    """``resume_from_checkpoint`` as given on a command line: ``"True"`` means auto-resume (``True``), ``"False"``
    or ``""`` a fresh run (``None``); anything else is a checkpoint path."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false", ""):
        return True if value.strip().lower() == "true" else None
    return None if value is False else value


def warn_if_inexact(path: str) -> None:
    """Warn when the checkpoint at ``path`` lacks the RNG state: training resumes, but not bit-exactly."""
    if not any(os.path.isfile(os.path.join(path, name)) for name in RNG_FILES) and not any(
        name.startswith("rng_state_") for name in os.listdir(path)
    ):
        logger.warning(
            "Checkpoint %s has no rng_state.pth: training resumes, but dropout and data order after the resume "
            "differ from an uninterrupted run (the resume is not exact).", path
        )
