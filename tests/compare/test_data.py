"""Single-task restrictions of a mixture, for both layouts."""

from __future__ import annotations

import pytest

from hf_mtl.compare.data import load_source, restrict_source, source_tasks


def test_restrict_shared_input_keeps_one_label_column():
    source = load_source("drug_reviews", None, max_train_samples=20, max_eval_samples=10)
    alone = restrict_source(source, ("rating",))
    assert [t.name for t in source_tasks(alone)] == ["rating"]
    assert "label_condition" not in alone.train.column_names and "label_rating" in alone.validation.column_names
    assert restrict_source(source, None) is source


def test_restrict_disjoint_and_unknown_task():
    source = load_source(None, ["debate_party", "rotten_tomatoes"], max_train_samples=10, max_eval_samples=5)
    assert [t.name for t in source_tasks(restrict_source(source, ("rotten_tomatoes",)))] == ["rotten_tomatoes"]
    with pytest.raises(ValueError, match="not in the mixture"):
        restrict_source(source, ("sst2",))
