"""Checkpoint integrity: never resume from a checkpoint a killed process left half-written.

``Trainer`` writes a checkpoint file by file (weights, optimizer, scheduler, RNG, combiner state, then
``trainer_state.json``). A process killed in the middle leaves a folder that ``get_last_checkpoint`` still
picks, and from which ``Trainer`` silently resumes without, say, the optimizer. Here a checkpoint counts
as complete only when every file the run needs is there and ``trainer_state.json`` parses.
"""

from __future__ import annotations

import json
import logging
import os
import re

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def checkpoint_problems(path: str, needs_optimizer: bool = True, needs_combiner: bool = False) -> list[str]:
    """What is missing or broken in the checkpoint folder ``path`` (empty when it is complete)."""
    problems = []
    if not any(os.path.isfile(os.path.join(path, name)) for name in WEIGHT_FILES):
        problems.append("no model weights (model.safetensors)")
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
            if not os.path.isfile(os.path.join(path, name)):
                problems.append(f"no {name}")
    if needs_combiner and not os.path.isfile(os.path.join(path, "combiner_state.pt")):
        problems.append("no combiner_state.pt (the combiner is stateful)")
    return problems


def last_complete_checkpoint(output_dir: str, needs_optimizer: bool = True, needs_combiner: bool = False) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` with nothing missing; incomplete newer ones are logged."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(m.group(1)), name) for name in os.listdir(output_dir)
        if (m := _CHECKPOINT.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    for _, name in reversed(steps):
        path = os.path.join(output_dir, name)
        problems = checkpoint_problems(path, needs_optimizer, needs_combiner)
        if not problems:
            return path
        logger.warning("Skipping incomplete checkpoint %s: %s.", path, "; ".join(problems))
    return None
