"""The noisy-data recipes check every method's options first, write each method's results as it finishes, and
resume: finished methods are read back, not trained again."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}_runs", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class FakeTraining:
    """Stands in for ``train_one``: records the calls, returns a result, or dies at ``die_at``."""

    def __init__(self, die_at: str | None = None) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.die_at = die_at

    def __call__(self, method, args, run_args, *rest, resume=None):
        self.calls.append((method, resume))
        if method == self.die_at:
            raise RuntimeError("killed")
        assert run_args.output_dir.endswith(method)
        return ({"accuracy": 0.5 + len(self.calls) / 100, "macro_f1": 0.5, "train_wall_time_s": 1.0},
                {"loss_masking": run_args.loss_masking, "masked_rate_corrupted": None, "masked_rate_intact": None})


@pytest.fixture
def recipe():
    return load_recipe("noisy_labels")


def run(recipe, encoder, out, *extra):
    return recipe.main(["--model_name_or_path", encoder, "--max_train_samples", "20", "--clean_size", "8",
                        "--max_eval_samples", "10", "--output_dir", str(out), "--use_cpu", "True", *extra])


def test_a_bad_option_of_a_later_method_fails_before_anything_trains(recipe, tiny_encoder_dir, tmp_path,
                                                                    monkeypatch):
    fake = FakeTraining()
    monkeypatch.setattr(recipe, "train_one", fake)
    with pytest.raises(ValueError, match="Method 'batch' .*masking_balance_labels"):
        run(recipe, tiny_encoder_dir, tmp_path / "out", "--masking_balance_labels", "True")
    assert fake.calls == []


def test_results_are_written_per_method_and_a_resume_trains_only_the_unfinished_ones(recipe, tiny_encoder_dir,
                                                                                     tmp_path, monkeypatch):
    out = tmp_path / "out"
    dying = FakeTraining(die_at="example")
    monkeypatch.setattr(recipe, "train_one", dying)
    with pytest.raises(RuntimeError, match="killed"):
        run(recipe, tiny_encoder_dir, out)
    written = json.loads((out / "metrics.json").read_text())
    assert list(written) == ["baseline"] and "| baseline |" in (out / "results.md").read_text()

    with pytest.raises(ValueError, match="holds a previous run of method 'baseline'.*--resume_from_checkpoint True"):
        run(recipe, tiny_encoder_dir, out)

    resumed = FakeTraining()
    monkeypatch.setattr(recipe, "train_one", resumed)
    metrics = run(recipe, tiny_encoder_dir, out, "--resume_from_checkpoint", "True")
    assert resumed.calls == [("example", None), ("batch", None)]
    assert metrics["baseline"] == written["baseline"]
    assert list(json.loads((out / "metrics.json").read_text())) == ["baseline", "example", "batch"]

    again = FakeTraining()
    monkeypatch.setattr(recipe, "train_one", again)
    run(recipe, tiny_encoder_dir, out, "--overwrite_output_dir", "True", "--methods", "baseline")
    assert again.calls == [("baseline", None)]


def test_an_explicit_checkpoint_must_belong_to_a_method(recipe, tiny_encoder_dir, tmp_path, monkeypatch):
    fake = FakeTraining()
    monkeypatch.setattr(recipe, "train_one", fake)
    with pytest.raises(ValueError, match="expected an existing checkpoint folder of one method"):
        run(recipe, tiny_encoder_dir, tmp_path / "out", "--resume_from_checkpoint", str(tmp_path / "missing"))
    assert fake.calls == []


def test_an_unfinished_method_resumes_from_its_checkpoint(recipe, tiny_encoder_dir, tmp_path):
    out = tmp_path / "out"
    common = ["--methods", "baseline", "--save_strategy", "steps", "--save_steps", "2", "--disable_tqdm", "True",
              "--per_device_train_batch_size", "4"]
    run(recipe, tiny_encoder_dir, out, *common, "--max_steps", "2")
    (out / "baseline" / "method_result.json").unlink()  # killed after the checkpoint, before the result
    run(recipe, tiny_encoder_dir, out, *common, "--max_steps", "3", "--resume_from_checkpoint", "True")
    report = json.loads((out / "noise_report.json").read_text())["methods"]["baseline"]
    assert report["resumed_from"] == str(out / "baseline" / "checkpoint-2")
    assert (out / "baseline" / "checkpoint-3").is_dir()
