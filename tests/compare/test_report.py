"""Δm, its sign correction, mean ± sd over seeds, ranks and the written report, on hand-computed numbers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from hf_mtl.compare.report import delta_m, lower_is_better, markdown, summarise, write_report
from hf_mtl.compare.spec import parse_spec

SPEC = {"name": "hand", "budget": {"max_steps": 4, "per_device_train_batch_size": 4}, "budget_mode": "per_task",
        "seeds": [0, 1], "sweep": {"tasks": ["a", "b"], "fractions": [0.25]}, "combiners": ["mgda"],
        "pareto": ["a", "b"], "lower_is_better": ["mae"]}
# Headline metrics: task a accuracy (higher is better), task b MAE (lower is better).
VALUES = {
    ("single:a", 0): {"a": 0.70}, ("single:a", 1): {"a": 0.80},
    ("single:b", 0): {"b": 1.10}, ("single:b", 1): {"b": 0.90},
    ("linear", 0): {"a": 0.78, "b": 0.95}, ("linear", 1): {"a": 0.82, "b": 0.85},
    ("mgda", 0): {"a": 0.60, "b": 1.20}, ("mgda", 1): {"a": 0.70, "b": 1.00},
    ("sweep(a=0.5,b=1.5)", 0): {"a": 0.75, "b": 1.00}, ("sweep(a=0.5,b=1.5)", 1): {"a": 0.75, "b": 1.00},
}


def record(label: str, seed: int, metrics: dict[str, float]) -> dict:
    kind = "single_task" if label.startswith("single") else "sweep" if label.startswith("sweep") else \
        "linear" if label == "linear" else "combiner"
    headline = {task: "accuracy" if task == "a" else "mae" for task in metrics}
    return {"run_id": f"{label}__seed{seed}", "seed": seed, "tasks": list(metrics), "headline_metric": headline,
            "metrics": {t: {headline[t]: v} for t, v in metrics.items()}, "wall_time_s": 10.0, "mean_step_time_s": 0.5,
            "method": {"label": label, "kind": kind, "budget_mode": "per_task" if kind == "single_task" else None}}


@pytest.fixture
def spec():
    return parse_spec(SPEC, task_names=["a", "b"])


@pytest.fixture
def runs():
    return [record(label, seed, metrics) for (label, seed), metrics in VALUES.items()]


def test_delta_m_hand_computed_with_a_lower_is_better_task():
    lower = pd.Series({"a": False, "b": True})
    # a: (0.80 − 0.75)/0.75 = +0.0666…; b (MAE, sign flipped): −(0.90 − 1.00)/1.00 = +0.1 → mean 0.083333…
    assert delta_m(pd.Series({"a": 0.80, "b": 0.90}), pd.Series({"a": 0.75, "b": 1.00}), lower) == pytest.approx(
        0.0833333333)
    # a higher MAE is worse: −(1.10 − 1.00)/1.00 = −0.1; a unchanged → −0.05
    assert delta_m(pd.Series({"a": 0.75, "b": 1.10}), pd.Series({"a": 0.75, "b": 1.00}), lower) == pytest.approx(-0.05)
    # without the sign correction the same numbers would read as an improvement
    assert delta_m(pd.Series({"a": 0.75, "b": 1.10}), pd.Series({"a": 0.75, "b": 1.00}),
                   pd.Series({"a": False, "b": False})) == pytest.approx(0.05)


def test_lower_is_better_names():
    assert lower_is_better("mae") and lower_is_better("mse") and lower_is_better("perplexity", ["perplexity"])
    assert not lower_is_better("accuracy") and not lower_is_better("pearson")


def test_summary_means_sds_delta_m_and_rank(spec, runs):
    summary = summarise(runs, spec)
    rows = {m["label"]: m for m in summary["methods"]}
    linear = rows["linear"]
    assert linear["per_task"]["a"]["mean"] == pytest.approx(0.80)
    assert linear["per_task"]["a"]["sd"] == pytest.approx(0.0282843, abs=1e-6)  # sd([0.78, 0.82], ddof=1)
    assert linear["per_task"]["b"]["mean"] == pytest.approx(0.90)
    assert linear["average"]["mean"] is None  # accuracy and MAE do not average
    dm = linear["delta_m"]["per_task"]
    assert dm["mean"] == pytest.approx(0.0833333, abs=1e-6)
    # paired per seed: seed 0 (0.08/0.70 + 0.15/1.10)/2 = 0.1253247, seed 1 (0.02/0.80 + 0.05/0.90)/2 = 0.0402778
    assert dm["sd"] == pytest.approx(0.0601372, abs=1e-6)
    assert dm["n"] == 2 and 0 < dm["p"] < 1
    # mgda: a (0.65 − 0.75)/0.75 = −0.13333, b −(1.10 − 1.00) = −0.1 → −0.116667
    assert rows["mgda"]["delta_m"]["per_task"]["mean"] == pytest.approx(-0.1166667, abs=1e-6)
    assert rows["single-task"]["delta_m"]["per_task"]["mean"] == pytest.approx(0.0)
    # sweep: a 0 change, b 0 change → 0, tied with single-task
    assert [rows[k]["rank"] for k in ("linear", "single-task", "sweep(a=0.5,b=1.5)", "mgda")] == [1, 2, 2, 4]
    assert rows["sweep(a=0.5,b=1.5)"]["weights"] == {"a": 0.5, "b": 1.5}


def test_one_seed_has_no_sd_and_no_p(spec, runs):
    summary = summarise([r for r in runs if r["seed"] == 0], spec)
    linear = next(m for m in summary["methods"] if m["label"] == "linear")
    assert linear["per_task"]["a"]["sd"] is None and linear["delta_m"]["per_task"]["p"] is None
    assert linear["delta_m"]["per_task"]["mean"] == pytest.approx(0.1253247, abs=1e-6)


def test_markdown_and_pngs_written(spec, runs, tmp_path):
    (tmp_path / "runs").mkdir()
    import json

    for run in runs:
        (tmp_path / "runs" / f"{run['run_id']}.json").write_text(json.dumps(run))
    summary = write_report(spec, tmp_path)
    text = (tmp_path / "comparison.md").read_text()
    assert "| 1 | linear | 0.800 ± 0.028 | 0.900 ± 0.071 | – | 8.33 ± 6.01 | 0.302 |" in text
    assert "| 2 | single-task | 0.750 ± 0.071 | 1.000 ± 0.141 | – | 0.00 ± 0.00 | – | 0.500 | 20 | 2 |" in text
    assert "b: mae ↓" in text and "10 of 10 runs finished" in text
    for name in ("comparison.json", "per_task.png", "pareto.png"):
        assert (tmp_path / name).stat().st_size > 1000
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["finished_runs"] == 10 and len(saved["runs"]) == 10
    assert math.isclose(saved["total_wall_time_s"], 100.0)
    assert summary["reference"] == "per_task"


def test_weight_table_averages_runs_and_normalises(spec, runs):
    for run in runs:
        if run["method"]["label"] == "mgda":
            run["mean_weights"] = {"a": 0.2, "b": 0.6} if run["seed"] == 0 else {"a": 0.4, "b": 0.8}
            run["mean_grad_norms"] = {"a": 1.0, "b": 3.0}
    text = markdown(summarise(runs, spec), spec, 10, 100.0)
    assert "| mgda | 0.30 | 0.70 | 1.00 | 3.00 |" in text  # means 0.3 and 0.7, shares of their sum 1.0


def test_partial_report_counts_missing_runs(spec, runs):
    text = markdown(summarise(runs[:4], spec), spec, 4, 40.0)
    assert "4 of 10 runs finished" in text


def test_a_partial_baseline_seed_is_left_out_of_the_pairing(spec, runs):
    # seed 2: linear finished, but only task a's single-task baseline did
    runs = runs + [record("linear", 2, {"a": 0.80, "b": 0.90}), record("single:a", 2, {"a": 0.75})]
    linear = next(m for m in summarise(runs, spec)["methods"] if m["label"] == "linear")
    paired = [delta_m(pd.Series(VALUES[("linear", s)]), pd.Series({**VALUES[("single:a", s)], **VALUES[("single:b", s)]}),
                      pd.Series({"a": False, "b": True})) for s in (0, 1)]
    result = linear["delta_m"]["per_task"]
    assert result["n"] == 2, result
    assert result["sd"] == pytest.approx(pd.Series(paired).std(ddof=1)), (result, paired)
