"""The runner: trains through MultiTaskTrainer, resumes without repeating finished runs, shards, locks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from hf_mtl import cli
from hf_mtl.compare import runner
from hf_mtl.compare.runner import _claim, parse_shard, run_comparison, shard_runs
from hf_mtl.compare.spec import parse_spec


@pytest.fixture
def quick_spec_file(tmp_path, tiny_encoder_dir):
    """The issue's quick preset: tiny budget, 2 seeds, 3 methods (single-task, linear, mgda) on 2 real tasks."""
    config = {"name": "quick", "tasks": ["rotten_tomatoes", "debate_party"], "encoder": tiny_encoder_dir,
              "max_seq_length": 16, "max_train_samples": 24, "max_eval_samples": 8,
              "budget": {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3},
              "seeds": [0, 1], "combiners": ["mgda"], "pareto": ["rotten_tomatoes", "debate_party"]}
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def count_trainings(monkeypatch):
    calls = []
    real = runner.train_run

    def counted(spec, run, cache, work_dir):
        calls.append(run.run_id)
        return real(spec, run, cache, work_dir)

    monkeypatch.setattr(runner, "train_run", counted)
    return calls


def test_cli_compare_trains_once_then_resumes_without_training(quick_spec_file, tmp_path, count_trainings, capsys):
    out = tmp_path / "out"
    assert cli.main(["compare", str(quick_spec_file), "--output_dir", str(out)]) == 0
    assert len(count_trainings) == 8  # (2 single-task + linear + mgda) × 2 seeds
    record = json.loads((out / "runs" / "mgda__seed1.json").read_text())
    assert record["seed"] == 1 and record["max_steps"] == 2 and record["mean_step_time_s"] > 0
    assert set(record["metrics"]) == {"rotten_tomatoes", "debate_party"}
    assert 0.0 <= record["metrics"]["debate_party"]["accuracy"] <= 1.0
    assert sum(record["mean_weights"].values()) == pytest.approx(1.0)  # MGDA: a convex combination
    assert all(v > 0 for v in record["mean_grad_norms"].values())
    linear = json.loads((out / "runs" / "linear__seed0.json").read_text())
    assert linear["mean_weights"] == {"rotten_tomatoes": 1.0, "debate_party": 1.0} and linear["mean_grad_norms"] is None
    assert cli.main(["compare", str(quick_spec_file), "--output_dir", str(out)]) == 0
    assert len(count_trainings) == 8  # nothing trained again
    printed = capsys.readouterr().out
    assert "trained 0, finished before 8" in printed and "8 of 8 runs finished" in printed
    for name in ("comparison.md", "comparison.json", "per_task.png", "pareto.png"):
        assert (out / name).is_file()
    assert not list(out.glob("runs/*.lock")) and not list(out.glob("*-*"))  # locks and work dirs cleaned up


def test_report_only_trains_nothing(quick_spec_file, tmp_path, count_trainings):
    out = tmp_path / "empty"
    assert cli.main(["compare", str(quick_spec_file), "--output_dir", str(out), "--report-only"]) == 0
    assert count_trainings == [] and "0 of 8 runs finished" in (out / "comparison.md").read_text()


def test_shards_partition_the_runs():
    spec = parse_spec({"seeds": [0, 1, 2], "combiners": ["mgda", "pcgrad"]}, task_names=["a", "b"])
    runs = spec.runs()
    shards = [shard_runs(runs, (i, 3)) for i in range(3)]
    ids = [r.run_id for shard in shards for r in shard]
    assert sorted(ids) == sorted(r.run_id for r in runs) and len(ids) == len(set(ids))
    assert all(len(shard) == len(runs) // 3 for shard in shards)
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_shard_trains_only_its_runs(tmp_path, monkeypatch):
    spec = parse_spec({"seeds": [0, 1], "combiners": ["mgda"]}, task_names=["a", "b"])
    trained = []

    def fake_train(spec, run, cache, work_dir):
        trained.append(run.run_id)
        return {"run_id": run.run_id, "headline_metric": {}, "metrics": {}, "wall_time_s": 0.0}

    monkeypatch.setattr(runner, "train_run", fake_train)
    monkeypatch.setattr(runner, "_DataCache", lambda spec: None)
    report = run_comparison(spec, tmp_path, shard=(1, 2))
    assert trained == [r.run_id for r in spec.runs()[1::2]] == report.trained
    report = run_comparison(spec, tmp_path, shard=(0, 2))
    assert sorted(trained) == sorted(r.run_id for r in spec.runs())


def test_locks_skip_live_claims_and_take_over_dead_ones(tmp_path):
    lock = tmp_path / "run.lock"
    assert _claim(lock) and not _claim(lock)  # our own process holds it
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = lock.read_text().split()[0]
    lock.write_text(f"{host} {dead.pid}")
    assert _claim(lock) and lock.read_text() == f"{host} {os.getpid()}"
