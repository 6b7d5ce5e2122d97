"""The noisy-data recipes end to end on a tiny encoder: metrics and noise reports, python and accelerate launch."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--max_steps", "3", "--logging_steps", "1", "--use_cpu", "True", "--disable_tqdm", "True",
        "--per_device_train_batch_size", "8", "--masking_clean_batch_size", "4"]


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def launch_on_two_processes(recipe: str, tmp_path: Path, arguments: list[str]) -> None:
    """``accelerate launch`` a recipe with the 2-process CPU config; fails the test with the output's tail."""
    command = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--config_file",
               str(ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml"), str(ROOT / "recipes" / f"{recipe}.py"),
               *arguments, *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]


@pytest.mark.slow
def test_noisy_labels_reports_accuracy_and_masked_rates(tmp_path, tiny_encoder_dir):
    recipe = load_recipe("noisy_labels")
    out = tmp_path / "labels"
    metrics = recipe.main(["--model_name_or_path", tiny_encoder_dir, "--max_train_samples", "40", "--clean_size", "16",
                           "--max_eval_samples", "24", "--output_dir", str(out), *TINY])
    assert set(metrics) == {"baseline", "example", "batch"}
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in metrics.values())
    report = json.loads((out / "noise_report.json").read_text())
    assert (report["noise_rate"], report["noisy_examples"], report["corrupted_examples"]) == (0.4, 40, 16)
    example = report["methods"]["example"]
    assert example["decisions_flipped"] + example["decisions_intact"] == 3 * 8 and example["decisions_unknown"] == 0
    assert 0.0 <= example["masked_rate_corrupted"] <= 1.0 and 0.0 <= example["masked_rate_intact"] <= 1.0
    assert report["methods"]["batch"]["masked_rate_corrupted"] is None
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert "| example | 42 | 0.40 |" in (out / "results.md").read_text()


def test_label_noise_is_symmetric_and_exact():
    recipe = load_recipe("noisy_labels")
    labels = np.repeat([0, 1, 2], 100)
    noisy, corrupted = recipe.corrupt_labels(labels, 3, 0.4, np.random.default_rng(0))
    assert corrupted.sum() == 120 and (noisy[corrupted] != labels[corrupted]).all()
    assert (noisy[~corrupted] == labels[~corrupted]).all()
    assert set(np.unique(noisy[corrupted & (labels == 0)])) == {1, 2}


def test_pair_noise_kinds_hit_their_own_examples():
    recipe = load_recipe("noisy_nmt")
    args = recipe.NoisyNMTArguments(misaligned_rate=0.3, truncated_rate=0.2, copied_rate=0.1, max_train_samples=200)
    noisy, clean, test = recipe.build_data(args, seed=0)
    counts = noisy["kind"].value_counts().to_dict()
    assert counts == {"intact": 80, "misaligned": 60, "truncated": 40, "copied": 20}
    intact, misaligned = noisy[noisy["kind"] == "intact"], noisy[noisy["kind"] == "misaligned"]
    assert (intact["target"] == intact["reference"]).all() and (misaligned["target"] != misaligned["reference"]).all()
    truncated = noisy[noisy["kind"] == "truncated"]
    assert all(p.startswith(t) and len(t) < len(p) for t, p in zip(truncated["target"], truncated["reference"], strict=True))
    copied = noisy[noisy["kind"] == "copied"]
    assert (copied["target"] == copied["source"]).all()
    test_chapters = set(zip(test["book"], test["chapter"], strict=True))
    assert not test_chapters & set(zip(noisy["book"], noisy["chapter"], strict=True))
    assert not test_chapters & set(zip(clean["book"], clean["chapter"], strict=True))
    with pytest.raises(ValueError, match="add up to more than 1"):
        recipe.NoisyNMTArguments(misaligned_rate=0.6, copied_rate=0.5)


@pytest.mark.slow
def test_noisy_nmt_reports_bleu_chrf_and_masked_rates(tmp_path, tiny_encoder_dir):
    recipe = load_recipe("noisy_nmt")
    out = tmp_path / "nmt"
    metrics = recipe.main(["--model_name_or_path", tiny_encoder_dir, "--max_train_samples", "40", "--clean_size", "8",
                           "--max_test_samples", "8", "--decoder_layers", "1", "--generation_max_length", "8",
                           "--truncated_rate", "0.1", "--output_dir", str(out), *TINY])
    assert set(metrics) == {"copy_source", "baseline", "example", "batch"}
    assert all(0.0 <= m["bleu"] <= 100.0 and 0.0 <= m["chrf"] <= 100.0 for m in metrics.values())
    report = json.loads((out / "noise_report.json").read_text())
    assert report["kinds"] == {"intact": 20, "misaligned": 16, "truncated": 4}
    example = report["methods"]["example"]
    assert example["decisions_intact"] + example["decisions_misaligned"] + example["decisions_truncated"] == 24
    assert {"masked_rate_corrupted", "masked_rate_intact", "masked_rate_misaligned"} <= set(example)


@pytest.mark.slow
@pytest.mark.distributed
def test_noisy_labels_under_accelerate_launch_on_two_processes(tmp_path, tiny_encoder_dir):
    out = tmp_path / "labels"
    launch_on_two_processes("noisy_labels", tmp_path, [
        "--model_name_or_path", tiny_encoder_dir, "--max_train_samples", "40", "--clean_size", "16",
        "--max_eval_samples", "24", "--methods", "example", "--output_dir", str(out)])
    example = json.loads((out / "noise_report.json").read_text())["methods"]["example"]
    # two ranks × 8 examples × 3 steps, all counted after the all-reduce
    assert example["decisions_flipped"] + example["decisions_intact"] == 2 * 3 * 8


def test_label_agreement_tells_class_following_masks_from_label_blind_ones():
    recipe = load_recipe("noisy_labels")
    from hf_mtl.masking import MaskRecord

    agreement = recipe.LabelAgreement("sentiment")
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])

    def observe(keep: list[bool], batch_labels: torch.Tensor = labels) -> None:
        batch = {"task_batches": {"sentiment": {"labels": batch_labels}}}
        agreement(batch, MaskRecord(step=0, alignments=torch.zeros(len(keep)), keep=torch.tensor(keep)))

    observe([False, True, False, True, True, False, False, True])  # keeps exactly class 1
    observe([True, True, False, False, True, True, False, False])  # half of each class
    observe([True, False], torch.tensor([1, 1]))  # one class only: no agreement defined
    assert agreement.values[:2] == [1.0, 0.5] and agreement.values[2] != agreement.values[2]
    assert agreement.mean() == 0.75


@pytest.mark.slow
@pytest.mark.distributed
def test_noisy_nmt_under_accelerate_launch_on_two_processes(tmp_path, tiny_encoder_dir):
    out = tmp_path / "nmt"
    launch_on_two_processes("noisy_nmt", tmp_path, [
        "--model_name_or_path", tiny_encoder_dir, "--max_train_samples", "40", "--clean_size", "8",
        "--max_test_samples", "8", "--decoder_layers", "1", "--generation_max_length", "8",
        "--methods", "example,batch", "--output_dir", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"copy_source", "example", "batch"}  # written once, by the main process
    example = json.loads((out / "noise_report.json").read_text())["methods"]["example"]
    # two ranks × 8 pairs × 3 steps, all counted after the all-reduce
    assert example["decisions_intact"] + example["decisions_misaligned"] == 2 * 3 * 8


def test_noisy_nmt_says_plainly_when_no_method_beats_copying():
    recipe = load_recipe("noisy_nmt")
    below = {"copy_source": {"bleu": 25.27}, "baseline": {"bleu": 4.38}, "example": {"bleu": 3.89}}
    note = recipe.copy_baseline_note(below)
    assert "4.38 < 25.27" in note and "smoke test" in note
    assert recipe.copy_baseline_note({**below, "batch": {"bleu": 30.0}}) is None
