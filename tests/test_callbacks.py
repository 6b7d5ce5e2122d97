"""MultiTaskDiagnosticsCallback: records built from the trainer's keys, the history file, TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import TrainerControl, TrainerState

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtl.callbacks import (
    HISTORY_FILE,
    MultiTaskDiagnosticsCallback,
    diagnostics_record,
    infer_task_names,
    read_history,
    records_from_log_history,
)

TASKS = ["sentiment", "length", "score"]


def logs_for_step(**overrides) -> dict[str, float]:
    logs = {"loss": 1.5, "grad_norm": 3.0, "learning_rate": 1e-3, "epoch": 0.5,
            "loss_sentiment": 0.7, "loss_length": 1.1, "loss_score": 0.2,
            "weight_sentiment": 0.5, "weight_length": 0.3, "weight_score": 0.2,
            "grad_norm_sentiment": 2.0, "grad_norm_length": 1.0, "grad_norm_score": 4.0,
            "cosine_sentiment__length": -0.25, "cosine_sentiment__score": 0.5, "cosine_length__score": 0.1}
    logs.update(overrides)
    return logs


def test_record_holds_the_symmetric_cosine_matrix_and_per_task_values():
    record = diagnostics_record(logs_for_step(), step=7, epoch=0.5, tasks=TASKS)
    assert record["kind"] == "train" and record["step"] == 7 and record["tasks"] == TASKS
    assert record["loss"] == {"sentiment": 0.7, "length": 1.1, "score": 0.2}
    assert record["weight"] == {"sentiment": 0.5, "length": 0.3, "score": 0.2}
    assert record["grad_norm"] == {"sentiment": 2.0, "length": 1.0, "score": 4.0}
    assert record["cosine"] == [[1.0, -0.25, 0.5], [-0.25, 1.0, 0.1], [0.5, 0.1, 1.0]]


def test_task_names_are_read_off_the_loss_keys_in_logged_order():
    assert infer_task_names(logs_for_step()) == TASKS
    assert diagnostics_record(logs_for_step(), step=1)["tasks"] == TASKS


def test_zero_gradient_makes_its_cosines_undefined_not_zero():
    logs = logs_for_step(grad_norm_length=0.0, cosine_sentiment__length=0.0, cosine_length__score=0.0)
    cosine = diagnostics_record(logs, step=1, tasks=TASKS)["cosine"]
    assert cosine[1] == [None, None, None] and cosine[0][1] is None and cosine[2][1] is None
    assert cosine[0][2] == 0.5


def test_non_finite_values_become_null_and_the_record_is_strict_json():
    record = diagnostics_record(logs_for_step(loss_score=math.nan, cosine_sentiment__score=math.inf),
                                step=1, tasks=TASKS)
    assert record["loss"]["score"] is None and record["cosine"][0][2] is None
    json.dumps(record, allow_nan=False)


def test_loss_based_step_has_weights_but_no_gram():
    logs = {k: v for k, v in logs_for_step().items() if not k.startswith(("grad_norm_", "cosine_"))}
    record = diagnostics_record(logs, step=1, tasks=TASKS)
    assert record["weight"] is not None and record["grad_norm"] is None and record["cosine"] is None


def test_eval_and_summary_entries():
    record = diagnostics_record({"eval_sentiment_loss": 0.4, "eval_average": 0.8, "epoch": 1.0}, step=9)
    assert record == {"kind": "eval", "step": 9, "epoch": None,
                      "metrics": {"eval_sentiment_loss": 0.4, "eval_average": 0.8}}
    assert diagnostics_record({"train_runtime": 3.0, "train_loss": 0.9}, step=9) is None


def test_log_history_entries_keep_their_own_steps():
    history = [{**logs_for_step(), "step": 5}, {"eval_average": 0.5, "epoch": 1.0, "step": 5},
               {"train_runtime": 1.0, "step": 5}]
    records = records_from_log_history(history)
    assert [(r["kind"], r["step"]) for r in records] == [("train", 5), ("eval", 5)]
    with pytest.raises(ValueError, match="without a 'step'"):
        records_from_log_history([logs_for_step()])


def test_history_file_name_must_stay_inside_output_dir():
    with pytest.raises(ValueError, match="plain file name"):
        MultiTaskDiagnosticsCallback("../elsewhere.jsonl")


def test_malformed_history_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / HISTORY_FILE
    path.write_text('{"kind": "train", "step": 1}\n{"kind": "train", "step": \n')
    with pytest.raises(ValueError, match="line 2"):
        read_history(path)


def test_only_the_main_process_writes(tmp_path):
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    callback = MultiTaskDiagnosticsCallback()
    other_rank = TrainerState(is_world_process_zero=False, global_step=1)
    callback.on_log(args, other_rank, TrainerControl(), logs=logs_for_step())
    assert not (tmp_path / HISTORY_FILE).exists()
    main_rank = TrainerState(is_world_process_zero=True, global_step=1)
    callback.on_log(args, main_rank, TrainerControl(), logs=logs_for_step())
    assert [r["step"] for r in read_history(tmp_path / HISTORY_FILE)] == [1]


# --- with the real trainer ------------------------------------------------------------------------------
def train(tmp_path: Path, tiny_encoder_dir, tokenizer, tasks, data, **overrides) -> MultiTaskTrainer:
    options = dict(output_dir=str(tmp_path / "run"), per_device_train_batch_size=6, max_steps=3,
                   learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], seed=0, use_cpu=True,
                   dataloader_num_workers=0, disable_tqdm=True, combiner="mgda")
    resume = overrides.pop("resume_from_checkpoint", None)
    options.update(overrides)
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, tasks)
    trainer = MultiTaskTrainer(model, MultiTaskTrainingArguments(**options), train_dataset=data,
                               eval_dataset=data, processing_class=tokenizer,
                               callbacks=[MultiTaskDiagnosticsCallback()])
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for event_file in log_dir.rglob("events.out.tfevents*"):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return out


def test_history_matches_log_history_and_tensorboard_gets_every_scalar(tmp_path, tiny_encoder_dir, tokenizer,
                                                                       three_tasks, three_task_data):
    trainer = train(tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data, report_to=["tensorboard"])
    trainer.evaluate()
    run = Path(trainer.args.output_dir)
    records = read_history(run / HISTORY_FILE)
    assert [(r["kind"], r["step"]) for r in records] == [("train", 1), ("train", 2), ("train", 3), ("eval", 3)]
    logged = [entry for entry in trainer.state.log_history if "loss_sentiment" in entry]
    names = [t.name for t in three_tasks]
    events = scalars(run)
    for record, entry in zip(records[:3], logged, strict=True):
        assert record["tasks"] == names
        assert sum(record["weight"].values()) == pytest.approx(1.0)  # MGDA weights lie on the simplex
        cosine = record["cosine"]
        for i, a in enumerate(names):
            assert record["loss"][a] == entry[f"loss_{a}"]
            assert record["grad_norm"][a] == entry[f"grad_norm_{a}"] > 0
            assert cosine[i][i] == 1.0
            for j, b in enumerate(names[i + 1:], start=i + 1):
                assert cosine[i][j] == cosine[j][i] == entry[f"cosine_{a}__{b}"]
                assert -1.0 <= cosine[i][j] <= 1.0
        # TensorBoard (float32) carries the same numbers under train/<key>.
        for key in [f"{p}_{a}" for p in ("loss", "weight", "grad_norm") for a in names] + [
                f"cosine_{a}__{b}" for i, a in enumerate(names) for b in names[i + 1:]]:
            step_values = dict(events[f"train/{key}"])
            assert step_values[record["step"]] == pytest.approx(entry[key], rel=1e-5, abs=1e-7), key
    eval_record = records[3]
    assert eval_record["metrics"]["eval_sentiment_loss"] == pytest.approx(dict(events["eval/sentiment_loss"])[3])


def test_fresh_training_truncates_and_resuming_keeps_the_history_up_to_the_checkpoint(
        tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    path = tmp_path / "run" / HISTORY_FILE
    stale = json.dumps({"kind": "train", "step": 99, "tasks": [], "loss": {}}) + "\n"
    path.parent.mkdir()
    path.write_text(stale)  # left over from an earlier run in the same output_dir
    common = dict(max_steps=3, save_strategy="steps", save_steps=2)
    with pytest.raises(ValueError, match="holds a previous run"):  # kept unless overwrite_output_dir
        train(tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data, **common)
    assert path.read_text() == stale
    train(tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data, overwrite_output_dir=True, **common)
    first = read_history(path)
    assert [r["step"] for r in first] == [1, 2, 3]
    path.write_text(path.read_text() + stale)
    train(tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data,
          resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"), **common)
    resumed = read_history(path)
    assert [r["step"] for r in resumed] == [1, 2, 3]
    assert resumed[:2] == first[:2]
