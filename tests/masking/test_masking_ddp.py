"""Loss masking on two CPU processes (gloo) equals one process with the same global noisy and clean batches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .ddp_masking_worker import MODES

WORKER = Path(__file__).with_name("ddp_masking_worker.py")


def run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")


@pytest.mark.distributed
def test_two_processes_mask_and_train_like_one_process(tmp_path, tiny_encoder_dir):
    """Per step: the same alignments and masks (rank 0's examples then rank 1's) and, after training, the same
    parameters, in example mode (threshold, global keep fraction, label-balanced direction) and batch mode."""
    one, two = tmp_path / "one", tmp_path / "two"
    common = [str(WORKER), "--encoder", tiny_encoder_dir]
    run([sys.executable, *common, "--batch_size", "8", "--clean_batch_size", "4", "--out", str(one)], tmp_path)
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         str(29600 + os.getpid() % 1000), *common, "--batch_size", "4", "--clean_batch_size", "2", "--out", str(two)],
        tmp_path)
    initial = None
    for name in MODES:
        a, b = torch.load(one / f"{name}_params.pt"), torch.load(two / f"{name}_params.pt")
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")
        if initial is not None:
            assert any(not torch.equal(initial[k], a[k]) for k in a), "modes should train differently"
        initial = a
        single = torch.load(one / f"{name}_masks_0.pt")
        ranks = [torch.load(two / f"{name}_masks_{r}.pt") for r in range(2)]
        if name == "batch":
            assert single == [] and ranks == [[], []]
            continue
        assert len(single) == 2 and all(len(r) == 2 for r in ranks)
        for (step, alignments, keep), parts in zip(single, zip(*ranks, strict=True), strict=True):
            assert all(part[0] == step for part in parts)
            torch.testing.assert_close(torch.cat([p[1] for p in parts]), alignments, rtol=1e-4, atol=1e-6)
            assert torch.equal(torch.cat([p[2] for p in parts]), keep)
            assert 0 < int(keep.sum()) < keep.numel()
