"""``benchmarks/step_overhead.py``'s memory probe: the live-tensor peak counts what is alive at the same time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "step_overhead.py"
spec = importlib.util.spec_from_file_location("step_overhead", SCRIPT)
step_overhead = importlib.util.module_from_spec(spec)
spec.loader.exec_module(step_overhead)

MIB = 2**20 // 4  # float32 elements in one MiB


def test_tensor_peak_is_the_most_held_at_once_above_the_start() -> None:
    kept: list[torch.Tensor] = []

    def step() -> None:
        first = torch.ones(MIB)
        second = torch.ones(2 * MIB)  # 3 MiB alive together
        del first, second
        kept.append(torch.ones(MIB))  # 1 MiB held into the next call

    peak = step_overhead.peak_tensors_above_setup(step, torch.device("cpu"))
    assert peak == pytest.approx(4.0, abs=0.05)  # second call: 1 kept + 3
