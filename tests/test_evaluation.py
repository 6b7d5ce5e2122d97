"""HF-native evaluation and prediction: ``evaluate``/``predict`` through ``evaluation_loop`` and ``prediction_step``,
per task, in both layouts, with ``compute_metrics``, ``preprocess_logits_for_metrics``, ``eval_accumulation_steps``
and ``load_best_model_at_end``."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from conftest import SENTENCES

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtl.data import tokenize_shared_dataset


def make_args(tmp_path, **overrides):
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=6, per_device_eval_batch_size=4,
                    max_steps=2, learning_rate=1e-3, report_to=[], use_cpu=True, disable_tqdm=True,
                    save_strategy="no", dataloader_num_workers=0, sampling_strategy="uniform", seed=0)
    defaults.update(overrides)
    return MultiTaskTrainingArguments(**defaults)


def expected_predictions(model, tokenizer, texts, task):
    model.eval()
    with torch.no_grad():
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        z = model.encode(encoded)
        logits = model.heads[task](z, encoded)
    return logits.view(-1).numpy() if task == "score" else logits.argmax(-1).numpy()


def test_predict_disjoint_returns_per_task_predictions_and_labels(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                                  three_task_data):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    trainer = MultiTaskTrainer(model, make_args(tmp_path), train_dataset=three_task_data, processing_class=tokenizer)
    output = trainer.predict(three_task_data)
    assert set(output.predictions) == set(output.label_ids) == {"sentiment", "length", "score"}
    for name, dataset in three_task_data.items():
        assert len(output.predictions[name]) == len(dataset) == len(output.label_ids[name])
        np.testing.assert_allclose(np.asarray(output.label_ids[name]), np.asarray(dataset["labels"]), rtol=1e-6)
    texts = SENTENCES[:12]
    np.testing.assert_array_equal(output.predictions["length"], expected_predictions(model, tokenizer, texts, "length"))
    np.testing.assert_allclose(output.predictions["score"], expected_predictions(model, tokenizer, SENTENCES[:10],
                                                                                 "score"), rtol=1e-5, atol=1e-6)
    accuracy = float(np.mean(output.predictions["length"] == np.asarray(three_task_data["length"]["labels"])))
    assert output.metrics["test_length_accuracy"] == pytest.approx(accuracy)
    for key in ("test_sentiment_loss", "test_loss", "test_average", "test_score_pearson"):
        assert key in output.metrics, sorted(output.metrics)


def shared_data(tokenizer, three_tasks):
    raw = datasets.Dataset.from_dict({
        "text": SENTENCES[:12], "label_sentiment": [i % 2 for i in range(12)],
        "label_length": [min(len(s) // 15, 2) for s in SENTENCES[:12]],
        "label_score": [len(s) / 40.0 for s in SENTENCES[:12]]})
    return tokenize_shared_dataset(three_tasks, raw, tokenizer, max_length=32)


def test_predict_shared_layout(tmp_path, tiny_encoder_dir, tokenizer, three_tasks):
    data = shared_data(tokenizer, three_tasks)
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    trainer = MultiTaskTrainer(model, make_args(tmp_path, combiner="mgda", gradient_mode="encoder_output"),
                               train_dataset=data, eval_dataset=data, processing_class=tokenizer)
    trainer.train()
    output = trainer.predict(data)
    assert set(output.predictions) == {"sentiment", "length", "score"}
    np.testing.assert_array_equal(output.predictions["length"],
                                  expected_predictions(model, tokenizer, SENTENCES[:12], "length"))
    np.testing.assert_array_equal(output.label_ids["sentiment"], np.asarray(data["label_sentiment"]))
    metrics = trainer.evaluate()
    assert metrics["eval_length_accuracy"] == pytest.approx(output.metrics["test_length_accuracy"])


def test_compute_metrics_preprocess_and_eval_accumulation_are_honoured(tmp_path, tiny_encoder_dir, tokenizer,
                                                                       three_tasks, three_task_data):
    seen = {"preprocess": 0}

    def preprocess(predictions, labels):
        seen["preprocess"] += 1
        assert isinstance(predictions, dict) and isinstance(labels, dict)
        return predictions

    def compute_metrics(prediction):  # called once, with every task's predictions
        assert set(prediction.predictions) == {"sentiment", "length", "score"}
        return {"agreement": float(np.mean(prediction.predictions["sentiment"] == prediction.label_ids["sentiment"]))}

    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    results = []
    for accumulation in (None, 1):
        trainer = MultiTaskTrainer(model, make_args(tmp_path, eval_accumulation_steps=accumulation),
                                   train_dataset=three_task_data, eval_dataset=three_task_data,
                                   processing_class=tokenizer, compute_metrics=compute_metrics,
                                   preprocess_logits_for_metrics=preprocess)
        results.append(trainer.evaluate())
    assert seen["preprocess"] > 0
    assert results[0]["eval_agreement"] == pytest.approx(results[0]["eval_sentiment_accuracy"])
    for key, value in results[0].items():
        if not any(part in key for part in ("runtime", "per_second", "preparation_time")):
            assert results[1][key] == pytest.approx(value), key


def test_load_best_model_at_end_by_average(tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    args = make_args(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
                     load_best_model_at_end=True, metric_for_best_model="average", learning_rate=5e-3)
    trainer = MultiTaskTrainer(model, args, train_dataset=three_task_data, eval_dataset=three_task_data,
                               processing_class=tokenizer)
    trainer.train()
    evaluations = [e for e in trainer.state.log_history if "eval_average" in e]
    assert len(evaluations) == 4
    best = max(evaluations, key=lambda e: e["eval_average"])
    assert trainer.state.best_metric == pytest.approx(best["eval_average"])
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best['step']}")
    assert trainer.evaluate()["eval_average"] == pytest.approx(best["eval_average"])  # the best weights are back


def test_predict_on_unlabelled_data(tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    trainer = MultiTaskTrainer(model, make_args(tmp_path), train_dataset=three_task_data, processing_class=tokenizer)
    unlabelled = {name: data.remove_columns("labels") for name, data in three_task_data.items()}
    output = trainer.predict(unlabelled)
    assert output.label_ids == {} and set(output.predictions) == {"sentiment", "length", "score"}
    np.testing.assert_array_equal(output.predictions["length"],
                                  expected_predictions(model, tokenizer, SENTENCES[:12], "length"))
    shared = shared_data(tokenizer, three_tasks).remove_columns(["label_sentiment", "label_length", "label_score"])
    output = trainer.predict(shared)
    assert output.label_ids == {} and len(output.predictions["sentiment"]) == len(shared)
