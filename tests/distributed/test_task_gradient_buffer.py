"""The sharded reduction of the per-task gradient buffer (reduce-scatter, partial Grams, one K×K all-reduce,
all-gathered update) gives what the whole-buffer all-reduce gives and what the averaged gradients imply, on two
gloo processes; and sends fewer elements."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensor_checks import assert_close_by_norm

WORKER = Path(__file__).with_name("buffer_worker.py")
sys.path.insert(0, str(WORKER.parent))
from buffer_worker import NUM_TASKS, RANK1_ONLY, SHAPES, UNUSED  # noqa: E402


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("buffer")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(30500 + os.getpid() % 1000), str(WORKER), "--out", str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.distributed
@pytest.mark.parametrize("path", ["sharded", "all_reduce", "sharded_bf16", "all_reduce_bf16"])
def test_reduction_matches_the_averaged_gradients(results, path):
    """A bfloat16 buffer (``task_gradient_dtype``) rounds each stored and reduced gradient to 8 bits (rtol 1e-2);
    the heads' gradients (``extra``) stay float32 and exact."""
    rtol = 1e-2 if path.endswith("bf16") else 1e-6
    expected = results[0]["expected_jacobian"]
    live = [0, 2]  # task 1 holds a NaN from rank 1; task 2 was seen on rank 0 only
    exact_gram = expected[live] @ expected[live].T
    weights = torch.tensor([0.25, 0.0, 0.75], dtype=torch.float64)
    update = 2.0 * (weights[live] @ expected[live])
    sizes = [torch.Size(s).numel() for s in SHAPES]
    for rank, result in enumerate(results):
        got = result[path]
        label = f"{path}, rank {rank}"
        assert got["seen"].tolist() == [True] * NUM_TASKS, label
        assert_close_by_norm(got["gram"][live][:, live], exact_gram, f"{label}: Gram", rtol=rtol)
        assert torch.isnan(got["gram"][1, 1]), f"{label}: the NaN task's Gram diagonal is {got['gram'][1, 1]}"
        assert_close_by_norm(got["jacobian"][live], expected[live], f"{label}: J", rtol=rtol)
        assert torch.isnan(got["jacobian"][1]).any(), label
        torch.testing.assert_close(got["extra"], torch.full((6,), 1.5))
        assert got["grads"][UNUSED] is None, f"{label}: a parameter no task reached got a gradient"
        assert got["grads"][RANK1_ONLY] is not None, f"{label}: rank 1's gradient was dropped on rank {rank}"
        flat = torch.cat([(g if g is not None else torch.zeros(s)).reshape(-1).double()
                          for g, s in zip(got["grads"], SHAPES, strict=True)])
        unused = slice(sum(sizes[:UNUSED]), sum(sizes[:UNUSED + 1]))
        update[unused] = 0.0
        assert_close_by_norm(flat, update, f"{label}: update", rtol=rtol)


@pytest.mark.distributed
def test_row_sparse_vocabulary_reduces_like_the_dense_buffer(results):
    """Each rank looks up its own vocabulary rows: over two steps the all-reduced J is nonzero on their union, the
    Gram and update of the row-sparse buffer must be the dense buffer's on every rank, and only the union's rows
    are sent."""
    for rank, result in enumerate(results):
        for step, (sparse, dense) in enumerate(zip(result["row_sparse"], result["row_dense"], strict=True)):
            label = f"rank {rank}, step {step}"
            assert (sparse["row_sparse"], dense["row_sparse"]) == ((0,), ()), label
            assert_close_by_norm(sparse["gram"], dense["gram"], f"{label}: Gram", rtol=1e-6)
            assert_close_by_norm(sparse["jacobian"], dense["jacobian"], f"{label}: J", rtol=1e-6)
            for i, (ours, theirs) in enumerate(zip(sparse["grads"], dense["grads"], strict=True)):
                assert_close_by_norm(ours, theirs, f"{label}: update of parameter {i}", rtol=1e-6)
    touched = [set(torch.nonzero(r["row_dense"][1]["grads"][0].abs().sum(1)).flatten().tolist()) for r in results]
    assert len(touched[0]) > 60 and touched[0] == touched[1], f"{len(touched[0])} rows: one rank looks up at most 60"
    # Sent by one of 2 ranks in the second step (all-reduce of n: n elements): the 2 seen + 3 touched flags, the
    # 5000-row mask, the union's rows (2 tasks × 4 columns each) and each task's 15 other columns; the first step
    # also sends one flag (does the matrix stay row-sparse?).
    rows = len(touched[0])
    assert [r["row_sparse"][1]["elements_sent"] for r in results] == [5 + 5000 + 2 * rows * 4 + 2 * 15] * 2
    assert results[0]["row_sparse"][0]["elements_sent"] > 1 + 5 + 5000 + 2 * 15
    assert [r["row_dense"][1]["elements_sent"] for r in results] == [5 + 2 * 20015] * 2


@pytest.mark.distributed
def test_a_matrix_one_rank_finds_used_elsewhere_is_dense_on_every_rank(results):
    """Rank 1's first gradient has a row no lookup recorded: both ranks must keep the matrix dense together (the
    collectives must match) and give the dense buffer's Gram, J and update in both steps."""
    for rank, result in enumerate(results):
        for step, (sparse, dense) in enumerate(zip(result["row_sparse_fallback"], result["row_dense_fallback"],
                                                   strict=True)):
            label = f"rank {rank}, step {step}"
            assert sparse["row_sparse"] == (), f"{label}: the matrix was made row-sparse"
            assert_close_by_norm(sparse["gram"], dense["gram"], f"{label}: Gram", rtol=1e-6)
            assert_close_by_norm(sparse["jacobian"], dense["jacobian"], f"{label}: J", rtol=1e-6)
            for i, (ours, theirs) in enumerate(zip(sparse["grads"], dense["grads"], strict=True)):
                assert_close_by_norm(ours, theirs, f"{label}: update of parameter {i}", rtol=1e-6)
        assert float(result["row_dense_fallback"][0]["grads"][0][4999].abs().sum()) > 0, "row 4999 left out"


@pytest.mark.distributed
def test_gloo_defaults_to_the_whole_all_reduce(results):
    """gloo's reduce-scatter is slower than its all-reduce (hf_mtl.gradients.default_sharding): not the default."""
    assert [r["default_shard"] for r in results] == [False, False]


@pytest.mark.distributed
def test_sharded_reduction_sends_fewer_elements(results):
    """Elements one rank sends per step (ring algorithm): reduce-scatter K·P' + all-reduce of the K×K Gram,
    flags and head gradients + all-gather P' (P' = P padded to a multiple of W), against an all-reduce of
    K·P + heads and of the flags."""
    k, heads, params, world = NUM_TASKS, 6, len(SHAPES), 2
    numel = results[0]["sharded"]["numel"]
    padded = -(-numel // world) * world
    sharded = (k * padded + 2 * (k * k + k + params + heads) + padded) * (world - 1) // world
    whole = 2 * (k * numel + heads) * (world - 1) // world + 2 * (k + params) * (world - 1) // world
    assert [r["sharded"]["elements_sent"] for r in results] == [sharded, sharded]
    assert [r["all_reduce"]["elements_sent"] for r in results] == [whole, whole]
    assert sharded < whole
