"""The ``hf-mtl`` command line: combiners listing, plot, train, and their errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hf_mtl.callbacks import HISTORY_FILE
from hf_mtl.cli import main
from hf_mtl.combiners import available_combiners, get_combiner


def run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_combiners_lists_every_registered_name_with_its_kind_and_summary(capsys):
    code, out, _ = run_cli(["combiners"], capsys)
    assert code == 0
    rows = {line.split()[0]: line for line in out.strip().splitlines()}
    assert sorted(rows) == available_combiners()
    mgda = get_combiner("mgda")
    assert rows["mgda"].split()[1] == "gradient" and rows["linear"].split()[1] == "loss"
    assert "stateful" in rows["uncertainty"] and "stateful" not in rows["mgda"]
    assert rows["mgda"].endswith(type(mgda).__doc__.strip().splitlines()[0])


def test_missing_command_config_and_run_dir_are_clear_errors(tmp_path, capsys):
    code, _, err = run_cli([], capsys)
    assert code == 2 and "COMMAND" in err
    code, _, err = run_cli(["train", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "missing.yaml" in err and "does not exist" in err
    (tmp_path / "config.txt").write_text("max_steps: 1\n")
    code, _, err = run_cli(["train", str(tmp_path / "config.txt")], capsys)
    assert code == 2 and ".yaml" in err
    code, _, err = run_cli(["plot", str(tmp_path / "no_run")], capsys)
    assert code == 2 and "no_run" in err and "does not exist" in err
    code, _, err = run_cli(["plot", str(tmp_path)], capsys)
    assert code == 2 and HISTORY_FILE in err and "trainer_state.json" in err


def history_record(step: int, cosine: float) -> dict:
    return {"kind": "train", "step": step, "epoch": None, "tasks": ["x", "y"], "loss": {"x": 1.0, "y": 2.0},
            "weight": {"x": 0.4, "y": 0.6}, "grad_norm": {"x": 1.0, "y": 3.0},
            "cosine": [[1.0, cosine], [cosine, 1.0]]}


def test_plot_writes_to_out_and_prints_the_affinity_table(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps(history_record(step, c)) for step, c in [(5, -0.2), (10, -0.1), (15, 0.6)]]
    (run / HISTORY_FILE).write_text("\n".join(lines) + "\n")
    code, out, _ = run_cli(["plot", str(run), "--out", str(tmp_path / "figs")], capsys)
    assert code == 0
    for name in ("losses.png", "weights.png", "grad_norms.png", "conflict.png", "affinity.png", "affinity.md"):
        assert (tmp_path / "figs" / name).is_file(), name
        assert f"wrote {tmp_path / 'figs' / name}" in out
    assert "3 logged steps" in out
    assert "| x | y | 3 | +0.1000 | +0.6000 | 67% |" in out
    assert not (run / "plots").exists()


@pytest.mark.slow  # a fresh interpreter importing torch and transformers
def test_console_script_is_installed():
    script = Path(sys.executable).with_name("hf-mtl")
    if not script.is_file():
        pytest.skip("the hf-mtl console script is not installed in this environment (pip install -e .)")
    result = subprocess.run([str(script), "combiners"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[0] == available_combiners()[0]


@pytest.mark.slow
def test_train_then_plot_from_a_yaml_config(tmp_path, tiny_encoder_dir, capsys):
    output_dir = tmp_path / "run"
    config = {"model_name_or_path": tiny_encoder_dir, "output_dir": str(output_dir), "combiner": "mgda",
              "max_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 6, "max_train_samples": 24,
              "max_eval_samples": 12, "max_seq_length": 32, "use_cpu": True, "warmup_steps": 0,
              "disable_tqdm": True}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    code, out, _ = run_cli(["train", str(path)], capsys)
    assert code == 0
    metrics = json.loads((output_dir / "eval_results.json").read_text())
    assert 0.0 <= metrics["eval_average"] <= 1.0
    assert "| average | first metric |" in out
    code, out, _ = run_cli(["plot", str(output_dir)], capsys)
    assert code == 0 and "2 logged steps" in out
    assert (output_dir / "plots" / "conflict.png").is_file()


@pytest.mark.parametrize("arg", ["--help", "combiners"])
def test_help_and_combiners_load_neither_torch_nor_transformers(arg):
    """What keeps them fast (benchmarks/cli_startup.py measures the time): a fresh interpreter, no heavy import."""
    code = (f"import sys, runpy; sys.argv = ['hf-mtl', {arg!r}]\n"
            "try:\n    runpy.run_module('hf_mtl.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('HEAVY=' + ','.join(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "mgda" in result.stdout if arg == "combiners" else "usage: hf-mtl" in result.stdout
    assert result.stdout.strip().endswith("HEAVY="), result.stdout[-200:]
