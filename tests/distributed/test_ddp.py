"""Two CPU processes (gloo) reach the same parameters as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensor_checks import assert_same_parameters, assert_same_state

WORKER = Path(__file__).with_name("ddp_worker.py")


def run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")


def run_one_and_two_processes(common: list[str], reference: str, tmp_path, ranks_only: tuple[str, ...] = ()) -> tuple:
    """Run the worker once in one process and once on 2 ranks, with a global batch of 8 either way: 1 × (batch 4,
    accumulation 2) vs 2 × batch 4 (``accumulation``), 1 × batch 8 vs 2 × batch 4 (``big_batch``) or 1 × (batch
    2, accumulation 4) vs 2 × (batch 2, accumulation 2) (``accumulation_on_ranks``). ``ranks_only``: extra
    options of the two-rank run. Returns the two output directories."""
    one, two = tmp_path / "one", tmp_path / "two"
    single, ranks = {"accumulation": (["--batch_size", "4", "--accumulation", "2"], ["--batch_size", "4"]),
                     "big_batch": (["--batch_size", "8"], ["--batch_size", "4"]),
                     "accumulation_on_ranks": (["--batch_size", "2", "--accumulation", "4"],
                                               ["--batch_size", "2", "--accumulation", "2"])}[reference]
    run([sys.executable, str(WORKER), *common, *single, "--out", str(one)], tmp_path)
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         str(29500 + os.getpid() % 1000), str(WORKER), *common, *ranks, *ranks_only, "--out", str(two)], tmp_path)
    if sys.platform == "linux" and "--fsdp2" not in ranks_only:  # FSDP2's sharded model keeps the group alive
        # MultiTaskTrainer.end_training released the DDP wrapper, so destroying the group stopped its threads.
        assert json.loads((two / "threads.json").read_text()) == []
    return one, two


@pytest.mark.distributed
@pytest.mark.parametrize(("mode", "layout", "reference", "combiner"), [
    ("params", "disjoint", "accumulation", "inverse_norm"),
    ("params", "shared", "big_batch", "inverse_norm"),
    # shard_task_gradients=True: the K×P buffer reduce-scattered (the default on gloo is the whole all-reduce).
    ("params_sharded", "disjoint", "accumulation", "inverse_norm"),
    ("params_sharded", "shared", "big_batch", "inverse_norm"),
    ("params_sharded", "disjoint", "accumulation", "pcgrad"),
    ("encoder_output", "shared", "big_batch", "inverse_norm"),
    ("encoder_output", "shared", "accumulation", "inverse_norm"),
    # Stateful combiners: one call per optimizer step on every rank, with the step's all-reduced Gram/losses.
    ("params", "disjoint", "accumulation", "uncertainty"),
    ("params", "shared", "accumulation", "famo"),
    ("params", "disjoint", "accumulation", "dwa"),
    ("params", "disjoint", "accumulation", "pcgrad"),
    ("encoder_output", "shared", "accumulation", "gradnorm"),
])
def test_two_processes_match_one_process_with_the_same_global_batch(mode, layout, reference, combiner, tmp_path,
                                                                    tiny_encoder_dir):
    """2 ranks × batch B ≡ 1 process × (batch B, accumulation 2) ≡ 1 process × batch 2B, parameters and
    combiner state alike."""
    shard = "True" if mode.endswith("_sharded") else "auto"
    mode = mode.removesuffix("_sharded")
    common = ["--encoder", tiny_encoder_dir, "--mode", mode, "--layout", layout, "--combiner", combiner,
              "--shard_task_gradients", shard]
    one, two = run_one_and_two_processes(common, reference, tmp_path)
    a, b = torch.load(one / "params.pt"), torch.load(two / "params.pt")
    assert_same_parameters(b, a, f"{mode}/{layout}/{combiner}")  # up to float32 summation order (tensor_checks.py)
    single_combiner = torch.load(one / "combiner.pt", weights_only=False)
    ranks_combiner = torch.load(two / "combiner.pt", weights_only=False)
    assert_same_state(ranks_combiner["state"], single_combiner["state"], combiner)
    torch.testing.assert_close(ranks_combiner["weights"], single_combiner["weights"], rtol=1e-4, atol=1e-6)
    initial = torch.load(two / "initial.pt")
    assert any(not torch.equal(initial[n], b[n]) for n in b if n.startswith("encoder.")), "nothing trained"


@pytest.mark.distributed
@pytest.mark.parametrize(("layout", "reference"), [("disjoint", "accumulation"), ("shared", "big_batch")])
def test_lora_two_processes_match_one_process(layout, reference, tmp_path, tiny_encoder_dir):
    """With a LoRA adapter on the encoder, the params-mode all-reduce carries the adapter and the heads only:
    2 ranks ≡ 1 process, the adapter trains and the frozen encoder weights stay as loaded on every rank."""
    pytest.importorskip("peft")
    common = ["--encoder", tiny_encoder_dir, "--mode", "params", "--layout", layout, "--lora_r", "4"]
    one, two = run_one_and_two_processes(common, reference, tmp_path)
    a, b = torch.load(one / "params.pt"), torch.load(two / "params.pt")
    assert_same_parameters(b, a, f"lora/{layout}")
    initial = torch.load(two / "initial.pt")
    adapter = [n for n in b if "lora_" in n]
    frozen = [n for n in b if n.startswith("encoder.") and "lora_" not in n]
    assert adapter and all(not torch.equal(initial[n], b[n]) for n in adapter), "the adapter did not train"
    assert frozen and all(torch.equal(initial[n], b[n]) for n in frozen), "a frozen encoder weight moved"


@pytest.mark.distributed
@pytest.mark.parametrize(("mode", "layout", "reference", "combiner"), [
    ("params", "disjoint", "accumulation", "inverse_norm"),
    ("params", "shared", "big_batch", "mgda"),
    ("params", "disjoint", "accumulation_on_ranks", "pcgrad"),
    ("params_lora", "disjoint", "accumulation", "inverse_norm"),  # LoRA r=4: only adapter and heads train
    ("params", "shared", "big_batch", "uncertainty"),  # loss-based: a plain backward under FSDP
    ("encoder_output", "shared", "big_batch", "mgda"),
])
def test_fsdp2_plugin_two_processes_match_one_process(mode, layout, reference, combiner, tmp_path, tiny_encoder_dir):
    """Through the Trainer under accelerate's FSDP2 plugin (``fsdp_version: 2``, each BertLayer and the root
    sharded by ``fully_shard``; on CPU the worker lets accelerate select the plugin, see ``allow_fsdp_on_cpu``),
    two ranks reach the parameters and weights of one unsharded process with the same global batch. In
    ``params`` mode the per-task gradients come from FSDP's reduce-scatter into the shards (with gradient
    accumulation too, where accelerate defers FSDP's sync); ``encoder_output`` mode's final backward and a
    loss-based combiner's are plain FSDP backwards."""
    lora = ["--lora_r", "4"] if mode.endswith("_lora") else []
    if lora:
        pytest.importorskip("peft")
    common = ["--encoder", tiny_encoder_dir, "--mode", mode.removesuffix("_lora"), "--layout", layout,
              "--combiner", combiner, *lora]
    one, two = run_one_and_two_processes(common, reference, tmp_path, ranks_only=("--fsdp2",))
    sharded = torch.load(two / "combiner.pt", weights_only=False)
    single = torch.load(one / "combiner.pt", weights_only=False)
    assert sharded["fsdp2"] is True
    assert sharded["buffer"] == ("ShardedParameterBuffer" if single["buffer"] == "TaskGradientBuffer" else None)
    a, b = torch.load(one / "params.pt"), torch.load(two / "params.pt")
    assert_same_parameters(b, a, f"fsdp2/{mode}/{layout}/{combiner}")
    assert_same_state(sharded["state"], single["state"], combiner)
    torch.testing.assert_close(sharded["weights"], single["weights"], rtol=1e-4, atol=1e-6)
    initial = torch.load(two / "initial.pt")
    changed = {n for n in b if n.startswith("encoder.") and not torch.equal(initial[n], b[n])}
    assert changed, "nothing trained"
    if lora:  # the frozen encoder weights stay as loaded on every rank
        assert all("lora_" in n for n in changed), sorted(changed)
