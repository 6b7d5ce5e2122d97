"""recipes/compare.py and ``hf-mtl compare``: arguments and errors (the training path is tests/compare/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hf_mtl import cli
from hf_mtl.compare import load_spec

ROOT = Path(__file__).resolve().parents[2]


def test_recipe_script_help_lists_the_options():
    result = subprocess.run([sys.executable, str(ROOT / "recipes" / "compare.py"), "--help"], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0
    assert all(option in result.stdout for option in ("--output_dir", "--shard", "--report-only"))


def test_missing_config_and_bad_shard_are_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", str(tmp_path / "nope.yaml")])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
    spec = tmp_path / "s.yaml"
    spec.write_text("tasks: [debate_party]\nseeds: [0]\n")
    with pytest.raises(ValueError, match="shard"):
        cli.main(["compare", str(spec), "--shard", "2/2", "--output_dir", str(tmp_path / "out")])


@pytest.mark.parametrize("name", ["compare_text.yaml", "compare_qm9.yaml"])
def test_shipped_presets_parse(name):
    task_names = ["rotten_tomatoes", "bible_paraphrase", "debate_party"] if "text" in name else \
        ["mu", "alpha", "homo", "lumo", "r2", "zpve", "u0", "u298", "h298", "g298", "cv"]
    spec = load_spec(ROOT / "recipes" / "configs" / name, task_names=task_names)
    assert spec.seeds == [0, 1, 2] and spec.pareto and len(spec.methods) >= 6
