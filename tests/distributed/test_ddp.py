"""Two CPU processes (gloo) reach the same parameters as one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensor_checks import assert_same_parameters

WORKER = Path(__file__).with_name("ddp_worker.py")


def run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")


@pytest.mark.distributed
@pytest.mark.parametrize(("mode", "layout", "reference"), [
    ("params", "disjoint", "accumulation"),
    ("params", "shared", "big_batch"),
    ("encoder_output", "shared", "big_batch"),
])
def test_two_processes_match_one_process_with_the_same_global_batch(mode, layout, reference, tmp_path,
                                                                    tiny_encoder_dir):
    """2 ranks × batch B ≡ 1 process × (batch B, accumulation 2) ≡ 1 process × batch 2B.

    ``encoder_output`` is only compared with the 2B batch: under accumulation its micro-batches are
    weighted by the running Gram (documented), while ranks all-reduce their Grams before solving.
    """
    common = ["--encoder", tiny_encoder_dir, "--mode", mode, "--layout", layout]
    one, two = tmp_path / "one", tmp_path / "two"
    single = ["--batch_size", "4", "--accumulation", "2"] if reference == "accumulation" else ["--batch_size", "8"]
    run([sys.executable, str(WORKER), *common, *single, "--out", str(one)], tmp_path)
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         str(29500 + os.getpid() % 1000), str(WORKER), *common, "--batch_size", "4", "--out", str(two)], tmp_path)
    a, b = torch.load(one / "params.pt"), torch.load(two / "params.pt")
    assert_same_parameters(b, a, f"{mode}/{layout}")  # equal up to float32 summation order (tests/tensor_checks.py)
    initial = torch.load(two / "initial.pt")
    assert any(not torch.equal(initial[n], b[n]) for n in b if n.startswith("encoder.")), "nothing trained"
