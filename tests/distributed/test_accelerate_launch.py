"""``accelerate launch`` with the configs in recipes/accelerate: the recipe on two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from hf_mtl.callbacks import HISTORY_FILE, read_history

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "recipes" / "accelerate"
RECIPE = ROOT / "recipes" / "glue_mixture.py"


@pytest.mark.parametrize(("name", "distributed_type", "num_processes", "use_cpu"), [
    ("cpu_1proc", DistributedType.NO, 1, True),
    ("cpu_2proc", DistributedType.MULTI_GPU, 2, True),  # accelerate's torchrun launcher; ranks run MULTI_CPU
    ("multi_gpu", DistributedType.MULTI_GPU, -1, False),  # -1: accelerate demands --num_processes N
])
def test_configs_load_with_accelerates_own_reader(name, distributed_type, num_processes, use_cpu):
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert (config.distributed_type, config.num_processes, config.use_cpu) == (distributed_type, num_processes,
                                                                               use_cpu)
    assert config.num_machines == 1


@pytest.mark.distributed
def test_recipe_on_two_cpu_processes_evaluates_once(tmp_path, tiny_encoder_dir):
    output_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch",
        "--config_file", str(CONFIGS / "cpu_2proc.yaml"), str(RECIPE),
        "--model_name_or_path", tiny_encoder_dir, "--use_cpu", "True", "--output_dir", str(output_dir),
        "--combiner", "mgda", "--max_steps", "3", "--logging_steps", "1", "--per_device_train_batch_size", "6",
        "--max_train_samples", "24", "--max_eval_samples", "12", "--max_seq_length", "32", "--warmup_steps", "0",
        "--disable_tqdm", "True",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}  # no user accelerate config is read
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"accelerate launch failed:\n{log[-6000:]}"
    ranks = re.findall(r"Process rank: (\d) of (\d), device: (\S+), distributed type: (\w+)", log)
    assert sorted(ranks) == [("0", "2", "cpu:0", "MULTI_CPU"), ("1", "2", "cpu:0", "MULTI_CPU")], log[-3000:]
    # The main process alone writes metrics, the results table and the history.
    assert log.count("***** eval metrics *****") == 1 and log.count("| average | first metric |") == 1
    metrics = json.loads((output_dir / "eval_results.json").read_text())
    assert 0.0 <= metrics["eval_average"] <= 1.0
    assert {"eval_rotten_tomatoes_accuracy", "eval_bible_paraphrase_accuracy", "eval_debate_party_accuracy"} <= set(
        metrics)
    records = read_history(output_dir / HISTORY_FILE)
    assert [(r["kind"], r["step"]) for r in records] == [("train", 1), ("train", 2), ("train", 3), ("eval", 3)]
    assert all(abs(sum(r["weight"].values()) - 1.0) < 1e-9 for r in records[:3])
