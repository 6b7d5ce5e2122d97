"""Expanding a comparison spec into methods and runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_mtl.compare.encoders import ScratchEncoder
from hf_mtl.compare.spec import load_spec, parse_spec

TASKS = ["a", "b", "c"]


def test_methods_budget_modes_sweep_and_seed_major_runs():
    spec = parse_spec({"budget": {"max_steps": 10}, "budget_mode": "both", "seeds": [3, 4],
                       "sweep": {"tasks": ["a", "c"], "fractions": [0.25]},
                       "combiners": ["mgda", {"combiner": "pcgrad", "gradient_mode": ["params", "encoder_output"]},
                                     {"combiner": "primary_auxiliary", "combiner_options": {"primary": ["c"]}}]},
                      task_names=TASKS)
    labels = [m.label for m in spec.methods]
    assert labels == ["single:a[per_task]", "single:b[per_task]", "single:c[per_task]", "single:a[total]",
                      "single:b[total]", "single:c[total]", "linear", "sweep(a=0.5,b=1,c=1.5)", "mgda",
                      "pcgrad[params]", "pcgrad[encoder_output]", "primary_auxiliary"]
    steps = {m.label: m.max_steps for m in spec.methods if m.kind == "single_task"}
    assert steps["single:a[per_task]"] == 10 and steps["single:a[total]"] == 4  # ceil(10 / 3)
    assert spec.methods[7].combiner_options == {"weights": [0.5, 1.0, 1.5]}
    assert spec.methods[-1].combiner_options == {"primary": [2]}
    runs = spec.runs()
    assert len(runs) == 24 and [r.seed for r in runs[:12]] == [3] * 12  # whole seeds first
    assert len({r.run_id for r in runs}) == 24
    assert spec.reference_mode == "per_task"


@pytest.mark.parametrize(("config", "message"), [
    ({"learning_rte": 1}, "unknown keys"),
    ({"budget": {"steps": 3}}, "unknown budget keys"),
    ({"budget_mode": "equal"}, "budget_mode"),
    ({"combiners": ["mgda", "mgda"]}, "appear twice"),
    ({"pareto": ["a", "z"]}, "pareto"),
    ({"combiners": [{"combiner": "mgda", "tol": 1}]}, "unknown keys"),
    ({"sweep": {"weights": [[1, 2]]}}, "one weight per task"),
])
def test_bad_specs_are_errors(config, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(config, task_names=TASKS)


QM9_TARGETS = ["mu", "alpha", "homo", "lumo", "r2", "zpve", "u0", "u298", "h298", "g298", "cv"]


@pytest.mark.parametrize(("name", "task_names", "n_runs"), [
    ("compare_text", ["rotten_tomatoes", "bible_paraphrase", "debate_party"], 57),
    ("compare_qm9", QM9_TARGETS, 99),         # 3 × (22 single-target + linear + 2 sweep + 8 combiners)
    ("compare_qm9_scratch", QM9_TARGETS, 69),  # 3 × (22 single-target + linear)
])
def test_shipped_presets_parse(name, task_names, n_runs):
    spec = load_spec(Path(__file__).parents[2] / "recipes" / "configs" / f"{name}.yaml", task_names=task_names)
    assert len(spec.runs()) == n_runs and spec.budget_modes == ["per_task", "total"]
    assert isinstance(spec.encoder, ScratchEncoder) == name.endswith("scratch")
