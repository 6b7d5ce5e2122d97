"""``params`` mode under FSDP2 (``fully_shard``) on two gloo processes: the per-task gradients come from FSDP's
reduce-scatter into the parameters' shards, and the Gram, the combiner's weights, the gathered task gradients
and the parameters after two AdamW steps match plain autograd on an unsharded copy fed every rank's data.

FSDP2 runs on CPU with gloo in torch 2.13. The same mode through the Trainer and accelerate's FSDP2 plugin is
tested in ``test_ddp.py::test_fsdp2_plugin_two_processes_match_one_process``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensor_checks import assert_close_by_norm

WORKER = Path(__file__).with_name("fsdp_worker.py")
POOLER = ("encoder.pooler.dense.weight", "encoder.pooler.dense.bias")


@pytest.fixture(scope="module", params=["disjoint", "shared"])
def results(request, tmp_path_factory) -> tuple[str, list[dict]]:
    out = tmp_path_factory.mktemp(f"fsdp_{request.param}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(31500 + os.getpid() % 1000), str(WORKER), "--out", str(out), "--layout", request.param]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return request.param, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.distributed
def test_fsdp_params_step_matches_unsharded_autograd(results):
    layout, ranks = results
    for rank, result in enumerate(ranks):
        for step, (got, expected) in enumerate(zip(result["records"], result["expected"], strict=True)):
            label = f"{layout}, rank {rank}, step {step}"
            assert got["buffer_class"] == "ShardedParameterBuffer", label
            assert_close_by_norm(got["gram"], expected["gram"], f"{label}: Gram", rtol=1e-5)
            assert_close_by_norm(got["task_gradients"], expected["jacobian"], f"{label}: J", rtol=1e-5)
            torch.testing.assert_close(got["weights"], expected["weights"], rtol=1e-5, atol=1e-6)
            for name in POOLER:  # in no task's graph: no gradient, as after a plain backward
                assert got["grads"][name] is None, f"{label}: {name} got a gradient"
        for name, value in result["params"].items():
            assert_close_by_norm(value, result["expected_params"][name], f"{layout}, rank {rank}: {name}", rtol=1e-5)


@pytest.mark.distributed
def test_both_ranks_hold_the_same_model(results):
    layout, (first, second) = results
    for name, value in first["params"].items():
        assert torch.equal(value, second["params"][name]), f"{layout}: {name} differs between ranks"
    assert torch.equal(first["records"][-1]["weights"], second["records"][-1]["weights"]), layout
