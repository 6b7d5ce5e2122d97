"""Plots and the task-affinity summary: synthetic logs with known answers, and a real 3-step MGDA run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtl.callbacks import HISTORY_FILE, MultiTaskDiagnosticsCallback
from hf_mtl.plotting import (
    affinity_summary,
    conflict_figure,
    conflict_fraction,
    find_log_file,
    load_run,
    mean_cosine,
    plot_run,
    transfer_matrix,
    weights_figure,
)

TASKS = ["a", "b", "c"]
NORMS = {"a": 1.0, "b": 2.0, "c": 4.0}
COSINES = {  # per logged step
    ("a", "b"): [0.2, 0.1, 0.3, -0.1, 0.2, 0.4],      # positive on 5 of 6 steps: helps
    ("a", "c"): [-0.3, -0.2, -0.1, -0.4, 0.1, -0.2],  # negative on 5 of 6 steps: hurts
    ("b", "c"): [0.1, -0.1, 0.1, -0.1, 0.1, -0.1],    # half and half: mixed
}
STEPS = [10, 20, 30, 40, 50, 60]


def log_history(cosines=COSINES, norms=NORMS, with_gram=True) -> list[dict]:
    history = []
    for n, step in enumerate(STEPS):
        entry = {"loss": 3.0 - 0.1 * n, "learning_rate": 1e-4, "epoch": n / 6, "step": step}
        for k, name in enumerate(TASKS):
            entry[f"loss_{name}"] = 1.0 + k - 0.05 * n
            entry[f"weight_{name}"] = [0.5, 0.3, 0.2][k]
            if with_gram:
                entry[f"grad_norm_{name}"] = norms[name]
        if with_gram:
            for (a, b), series in cosines.items():
                entry[f"cosine_{a}__{b}"] = series[n]
        history.append(entry)
        if step == 30:
            history.append({f"eval_{t}_loss": 0.9 + k for k, t in enumerate(TASKS)} | {"step": step, "epoch": 0.5})
    history.append({"train_runtime": 12.0, "train_loss": 2.7, "step": 60})
    return history


def write_state(directory: Path, history: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "trainer_state.json"
    path.write_text(json.dumps({"global_step": STEPS[-1], "log_history": history}))
    return path


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    assert path.stat().st_size < 200_000, f"{path.name} is {path.stat().st_size} bytes"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 300


def test_affinity_summary_against_the_definitions(tmp_path):
    history = load_run(write_state(tmp_path / "run", log_history()))
    assert history.tasks == TASKS and history.steps.tolist() == STEPS
    pairs = {(p.task_a, p.task_b): p for p in affinity_summary(history)}
    assert {k: p.verdict for k, p in pairs.items()} == {("a", "b"): "helps", ("a", "c"): "hurts",
                                                       ("b", "c"): "mixed"}
    # Transfer from an explicit Gram G = diag(n) C diag(n): T_ij = G_ij / G_ii, median over steps.
    index = {name: i for i, name in enumerate(TASKS)}
    grams = []
    for n in range(len(STEPS)):
        cos = np.eye(3)
        for (a, b), series in COSINES.items():
            cos[index[a], index[b]] = cos[index[b], index[a]] = series[n]
        norms = np.array([NORMS[t] for t in TASKS])
        grams.append(norms[:, None] * cos * norms[None, :])
    grams = np.array(grams)
    for (a, b), series in COSINES.items():
        pair = pairs[(a, b)]
        i, j = index[a], index[b]
        assert pair.steps == 6
        assert pair.mean_cosine == pytest.approx(np.mean(series))
        assert pair.last_cosine == pytest.approx(series[-1])
        assert pair.conflict_fraction == pytest.approx(np.mean(np.array(series) < 0))
        assert pair.transfer_a_from_b == pytest.approx(np.median(grams[:, i, j] / grams[:, i, i]))
        assert pair.transfer_b_from_a == pytest.approx(np.median(grams[:, j, i] / grams[:, j, j]))
    ordered = affinity_summary(history)
    assert [p.mean_cosine for p in ordered] == sorted(p.mean_cosine for p in ordered)
    assert transfer_matrix(history).diagonal() == pytest.approx([1.0, 1.0, 1.0])


def test_undefined_cosines_are_left_out_of_every_statistic(tmp_path):
    history = log_history()
    history[0]["grad_norm_c"] = 0.0  # the trainer logs cosine 0.0 next to a zero gradient: undefined
    history[0]["cosine_a__c"] = history[0]["cosine_b__c"] = 0.0
    run = load_run(write_state(tmp_path / "run", history))
    assert np.isnan(run.cosine[0, 0, 2]) and np.isnan(run.cosine[0, 2, 2])
    i, j = 0, 2
    assert mean_cosine(run)[i, j] == pytest.approx(np.mean(COSINES[("a", "c")][1:]))
    assert conflict_fraction(run)[i, j] == pytest.approx(4 / 5)
    assert {(p.task_a, p.task_b): p.steps for p in affinity_summary(run)}[("a", "c")] == 5


def test_orthogonal_gradients_are_named_as_such(tmp_path):
    zeros = {pair: [0.0] * len(STEPS) for pair in COSINES}
    run = load_run(write_state(tmp_path / "run", log_history(cosines=zeros)))
    assert {p.verdict for p in affinity_summary(run)} == {"orthogonal"}


def test_plot_run_writes_readable_pngs_and_tables(tmp_path):
    write_state(tmp_path / "run", log_history())
    report = plot_run(tmp_path / "run", tmp_path / "plots")
    names = sorted(p.name for p in report.written)
    assert names == sorted(["losses.png", "weights.png", "grad_norms.png", "conflict.png", "affinity.png",
                            "affinity.md", "affinity.csv"])
    assert not report.skipped
    for path in report.written:
        if path.suffix == ".png":
            assert_png(path)
    with open(tmp_path / "plots" / "affinity.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["task_a"], r["task_b"], r["verdict"]) for r in rows] == [
        (p.task_a, p.task_b, p.verdict) for p in report.affinity]
    assert "| a | c |" in (tmp_path / "plots" / "affinity.md").read_text()
    assert report.history.eval_steps.tolist() == [30]
    assert report.history.eval_loss[0].tolist() == pytest.approx([0.9, 1.9, 2.9])


def test_loss_based_run_gets_loss_and_weight_plots_only(tmp_path):
    write_state(tmp_path / "run", log_history(with_gram=False))
    report = plot_run(tmp_path / "run")
    assert sorted(p.name for p in report.written) == ["losses.png", "weights.png"]
    assert set(report.skipped) == {"grad_norms.png", "conflict.png", "affinity.png"}
    assert all(p.parent == tmp_path / "run" / "plots" for p in report.written)
    with pytest.raises(ValueError, match="loss-based"):
        affinity_summary(report.history)


def test_which_log_file_is_read(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_log_file(run)
    run.mkdir()
    with pytest.raises(FileNotFoundError, match="mtl_history.jsonl"):
        find_log_file(run)
    write_state(run / "checkpoint-9", log_history()[:1])
    newest = write_state(run / "checkpoint-10", log_history())
    assert find_log_file(run) == newest  # numeric order, not lexicographic
    top = write_state(run, log_history())
    assert find_log_file(run) == top
    (run / HISTORY_FILE).write_text("")
    assert find_log_file(run) == run / HISTORY_FILE
    with pytest.raises(ValueError, match="no training step carries per-task keys"):
        load_run(run)


def test_state_without_per_task_keys_is_rejected(tmp_path):
    path = write_state(tmp_path / "run", [{"loss": 1.0, "step": 1}])
    with pytest.raises(ValueError, match="per-task keys"):
        load_run(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_run(path)


def test_three_mgda_steps_on_the_tiny_encoder_end_to_end(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                         three_task_data):
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path / "run"), per_device_train_batch_size=6, max_steps=3,
                                      learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[],
                                      seed=0, use_cpu=True, disable_tqdm=True, combiner="mgda")
    trainer = MultiTaskTrainer(model, args, train_dataset=three_task_data, eval_dataset=three_task_data,
                               processing_class=tokenizer, callbacks=[MultiTaskDiagnosticsCallback()])
    trainer.train()
    trainer.evaluate()
    report = plot_run(tmp_path / "run")
    assert report.history.source.endswith(HISTORY_FILE)
    assert report.history.tasks == [t.name for t in three_tasks]
    assert report.history.steps.tolist() == [1, 2, 3]
    assert report.history.eval_steps.tolist() == [3]
    assert np.allclose(report.history.weight.sum(axis=1), 1.0)
    logged = [e for e in trainer.state.log_history if "cosine_sentiment__score" in e]
    pair = next(p for p in report.affinity if (p.task_a, p.task_b) == ("sentiment", "score"))
    assert pair.mean_cosine == pytest.approx(np.mean([e["cosine_sentiment__score"] for e in logged]))
    assert len(report.affinity) == 3 and not report.skipped
    for path in report.written:
        if path.suffix == ".png":
            assert_png(path)


def test_conflict_colours_use_the_fixed_cosine_scale(tmp_path):
    tiny = {pair: [0.01 * (-1) ** n for n in range(len(STEPS))] for pair in COSINES}  # ±0.01: nearly orthogonal
    history = load_run(write_state(tmp_path / "run", log_history(cosines=tiny)))
    images = [image for ax in conflict_figure(history).axes for image in ax.get_images()]
    assert len(images) == 2 and all(image.get_clim() == (-1.0, 1.0) for image in images)
    red, green, blue, _ = images[1].cmap(images[1].norm(0.01))
    assert min(red, green, blue) > 0.9  # drawn nearly white, not as saturated agreement


def test_static_weights_are_labelled_static_and_drawn_apart(tmp_path):
    history = load_run(write_state(tmp_path / "run", log_history()))  # weights 0.5, 0.3, 0.2 at every step
    ax = weights_figure(history).axes[0]
    assert "Static" in ax.get_title()
    assert [line.get_label() for line in ax.get_lines()] == ["a (static, 0.5)", "b (static, 0.3)", "c (static, 0.2)"]
    assert len({line.get_linestyle() for line in ax.get_lines()}) == 3
    varying = log_history()
    varying[0]["weight_a"] = 0.9
    ax = weights_figure(load_run(write_state(tmp_path / "varying", varying))).axes[0]
    assert "Static" not in ax.get_title() and ax.get_lines()[0].get_label() == "a"
