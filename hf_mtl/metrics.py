"""Offline task metrics (scikit-learn / scipy / sacrebleu), with ``evaluate`` as the fallback for other names.

``evaluate.load("accuracy")`` fetches a script from the hub, which fails offline; the common GLUE
metrics and the translation metrics BLEU and chrF (sacrebleu; Post 2018, arXiv 1804.08771) are therefore
computed locally. Any other name is passed to ``evaluate.load`` for online users.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import sacrebleu
from scipy import stats
from sklearn import metrics as skm

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(skm.accuracy_score(references, predictions))


def _macro_f1(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(skm.f1_score(references, predictions, average="macro", zero_division=0))


def _binary_f1(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(skm.f1_score(references, predictions, average="binary", zero_division=0))


def _matthews(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(skm.matthews_corrcoef(references, predictions))


def _pearson(predictions: np.ndarray, references: np.ndarray) -> float:
    if np.std(predictions) == 0 or np.std(references) == 0:
        return 0.0
    return float(stats.pearsonr(predictions, references).statistic)


def _spearman(predictions: np.ndarray, references: np.ndarray) -> float:
    if np.std(predictions) == 0 or np.std(references) == 0:
        return 0.0
    return float(stats.spearmanr(predictions, references).statistic)


def _mse(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(skm.mean_squared_error(references, predictions))


def _mae(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(skm.mean_absolute_error(references, predictions))


def _bleu(predictions: np.ndarray, references: np.ndarray) -> float:
    """Corpus BLEU (0–100) of decoded texts against one reference each."""
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def _chrf(predictions: np.ndarray, references: np.ndarray) -> float:
    """Corpus chrF (0–100) of decoded texts against one reference each."""
    return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score)


LOCAL_METRICS: dict[str, MetricFn] = {
    "accuracy": _accuracy,
    "f1": _binary_f1,
    "macro_f1": _macro_f1,
    "matthews_correlation": _matthews,
    "pearson": _pearson,
    "spearmanr": _spearman,
    "mse": _mse,
    "mae": _mae,
    "sacrebleu": _bleu,
    "chrf": _chrf,
}
HIGHER_IS_BETTER = {name: name not in ("mse", "mae") for name in LOCAL_METRICS}


def compute_metric(name: str, predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """``{name: value}`` for a local metric, or the result of ``evaluate.load(name).compute`` otherwise."""
    if name in LOCAL_METRICS:
        return {name: LOCAL_METRICS[name](predictions, references)}
    import evaluate

    try:
        module = evaluate.load(name)
    except Exception as err:  # evaluate raises several types when a script cannot be fetched
        raise ValueError(
            f"Metric {name!r} is not one of the offline metrics {sorted(LOCAL_METRICS)} and "
            f"evaluate.load({name!r}) failed: {err}"
        ) from err
    result = module.compute(predictions=predictions, references=references)
    prefix = os.path.basename(name.rstrip("/"))  # a local module folder's name, or the hub name
    return {f"{prefix}_{k}" if k != prefix else k: float(v) for k, v in result.items() if np.isscalar(v)}
