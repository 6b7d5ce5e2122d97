"""Offline metrics, and the ``evaluate`` fallback for any other name (here a local metric module)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from hf_mtl.metrics import compute_metric

MODULE = '''
import datasets
import evaluate


class ExactMatchCount(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="count of exact matches", citation="", inputs_description="",
                                   features=datasets.Features({"predictions": datasets.Value("int64"),
                                                               "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        return {"matches": sum(int(p == r) for p, r in zip(predictions, references))}
'''


def test_local_metrics_values():
    predictions, references = np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1])
    assert compute_metric("accuracy", predictions, references) == {"accuracy": 0.75}
    assert compute_metric("f1", predictions, references)["f1"] == pytest.approx(0.8)
    assert compute_metric("macro_f1", predictions, references)["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert compute_metric("matthews_correlation", predictions, references)["matthews_correlation"] == pytest.approx(
        (2 * 1 - 1 * 0) / np.sqrt(3 * 2 * 2 * 1))
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.5, 2.9, 4.2])
    assert compute_metric("pearson", x, y)["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert compute_metric("spearmanr", x, y)["spearmanr"] == pytest.approx(1.0)
    assert compute_metric("pearson", np.ones(4), y) == {"pearson": 0.0}  # constant predictions: no NaN


def test_other_names_go_through_evaluate(tmp_path):
    folder = tmp_path / "exact_match_count"
    folder.mkdir()
    (folder / "exact_match_count.py").write_text(textwrap.dedent(MODULE))
    result = compute_metric(str(folder), np.array([1, 2, 3]), np.array([1, 0, 3]))
    assert result == {"exact_match_count_matches": 2.0}


def test_unknown_metric_names_itself_and_the_offline_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="Metric 'no_such_metric' is not one of the offline metrics"):
        compute_metric("no_such_metric", np.array([1]), np.array([1]))
