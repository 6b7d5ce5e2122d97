"""Helpers shared by the noisy-data recipes: method lists, the run-level masking report, output files."""

from __future__ import annotations

import json

import pytest
import torch

from hf_mtl.masking import MaskingTally, MaskRecord
from hf_mtl.recipes.noisy_data import (
    check_clean_size,
    format_value,
    masking_report,
    parse_methods,
    write_outputs,
)


def test_parse_methods_keeps_order_and_names_the_unknown_ones():
    assert parse_methods(" example, baseline ,", ("baseline", "example", "batch")) == ["example", "baseline"]
    with pytest.raises(ValueError, match=r"\['mixup'\] in --methods 'baseline,mixup'"):
        parse_methods("baseline,mixup", ("baseline", "example"))
    with pytest.raises(ValueError, match="Unknown method"):
        parse_methods(" , ", ("baseline",))
    with pytest.raises(ValueError, match="clean_size must be ≥ 1"):
        check_clean_size(0)


def test_example_report_counts_decisions_and_averages_the_logged_fraction():
    rows = [{"input_ids": [101, 7 + i, 102], "labels": i % 2} for i in range(4)]
    tally = MaskingTally.from_dataset(rows, ["intact", "flipped", "intact", "flipped"])
    batch = {"input_ids": torch.tensor([r["input_ids"] for r in rows]), "labels": torch.tensor([r["labels"] for r in rows])}
    tally(batch, MaskRecord(0, torch.zeros(4), torch.tensor([True, False, False, False])))
    history = [{"loss": 0.7}, {"masked_fraction": 0.75}, {"masked_fraction": 0.25}]
    report = masking_report("example", history, tally)
    assert report["masked_rate_corrupted"] == 1.0 and report["masked_rate_intact"] == 0.5
    assert report["mean_logged_masked_fraction"] == 0.5 and report["loss_masking"] == "example"


def test_batch_and_plain_reports_have_no_masked_rates():
    history = [{"masking_lambda": 0.0, "masking_active_fraction": 0.0},
               {"masking_lambda": 0.3, "masking_active_fraction": 1.0}, {"loss": 1.0}]
    batch = masking_report("batch", history, MaskingTally({}))
    assert batch["mean_lambda"] == pytest.approx(0.15) and batch["constrained_step_fraction"] == 0.5
    assert batch["masked_rate_corrupted"] is None and batch["masked_rate_intact"] is None
    plain = masking_report("none", history, MaskingTally({}))
    assert plain == {"loss_masking": "none", "masked_rate_corrupted": None, "masked_rate_intact": None}
    assert masking_report("batch", [], MaskingTally({}))["mean_lambda"] is None


def test_write_outputs_writes_the_three_files(tmp_path, capsys):
    write_outputs(str(tmp_path / "run"), {"baseline": {"accuracy": 0.5}}, {"seed": 1}, "| a |")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {"baseline": {"accuracy": 0.5}}
    assert json.loads((tmp_path / "run" / "noise_report.json").read_text()) == {"seed": 1}
    assert (tmp_path / "run" / "results.md").read_text() == "| a |\n" and "| a |" in capsys.readouterr().out
    assert (format_value(None), format_value(0.12345)) == ("–", "0.123")
