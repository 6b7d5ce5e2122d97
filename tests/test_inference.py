"""Using a trained model: MultiTaskModel.predict, the "multi-task" pipeline, the saved directory (model, tokenizer,
model card, auto_map) loaded in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import datasets
import pytest
import torch
from conftest import SENTENCES, sentiment_rows
from huggingface_hub import ModelCard
from transformers import pipeline

from hf_mtl import MultiTaskModel, MultiTaskPipeline, MultiTaskTrainer, MultiTaskTrainingArguments, Task
from hf_mtl.data import tokenize_task_dataset
from hf_mtl.model_card import task_metrics

TEXTS = ["A gripping, beautifully acted film.", "Dull, overlong and badly written."]


@pytest.fixture
def tasks() -> list[Task]:
    return [Task("sentiment", label_names=["neg", "pos"]), Task("topic", num_labels=3),
            Task("score", "regression"), Task("tags", "token_classification", label_names=["O", "B", "I"]),
            Task("para", "sentence_pair_classification", label_names=["other", "same"]),
            Task("echo", "seq2seq")]


@pytest.fixture
def model(tiny_encoder_dir, tokenizer, tasks) -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel.from_encoder(tiny_encoder_dir, tasks, tokenizer=tokenizer, seq2seq_max_new_tokens=4).eval()


def logits_of(model, tokenizer, task, texts, pairs=None):
    batch = dict(tokenizer(texts, pairs, padding=True, return_tensors="pt"))
    with torch.no_grad():
        z = model.encode(batch)
        return model.heads[task](z, batch), z, batch


def test_predict_returns_label_names_probabilities_values_word_tags_and_text(model, tokenizer):
    out = model.predict(TEXTS, tokenizer=tokenizer, batch_size=1)
    assert set(out) == {"sentiment", "topic", "score", "tags", "echo"}  # no pairs given: the pair task is left out
    probabilities = logits_of(model, tokenizer, "sentiment", TEXTS)[0].softmax(-1)
    for row, result in enumerate(out["sentiment"]):
        best = int(probabilities[row].argmax())
        assert result == {"label": ["neg", "pos"][best], "score": pytest.approx(float(probabilities[row, best]), 1e-5)}
    assert [r["label"] for r in out["topic"]] == [f"LABEL_{int(i)}" for i in
                                                   logits_of(model, tokenizer, "topic", TEXTS)[0].argmax(-1)]
    values = logits_of(model, tokenizer, "score", TEXTS)[0].view(-1)
    assert [r["score"] for r in out["score"]] == pytest.approx(values.tolist(), abs=1e-5)
    words = [[e["word"] for e in r["entities"]] for r in out["tags"]]
    assert words == [["A", "gripping", ",", "beautifully", "acted", "film", "."],
                     ["Dull", ",", "overlong", "and", "badly", "written", "."]]
    tag_logits = logits_of(model, tokenizer, "tags", TEXTS)[0]
    first = out["tags"][0]["entities"][3]  # "beautifully": several word pieces, tagged by the first
    assert TEXTS[0][first["start"]:first["end"]] == "beautifully"
    assert first["entity"] == ["O", "B", "I"][int(tag_logits[0, first["index"]].argmax())]
    logits, z, batch = logits_of(model, tokenizer, "echo", TEXTS)
    ids = model.heads["echo"].predict(z, logits, batch)
    expected = tokenizer.batch_decode([[t for t in row if t != -100] for row in ids.tolist()], skip_special_tokens=True)
    assert [r["generated_text"] for r in out["echo"]] == expected


def test_predict_pairs_tasks_and_errors(model, tokenizer):
    out = model.predict(TEXTS[0], text_pairs=TEXTS[1], tasks="para", tokenizer=tokenizer)
    probabilities = logits_of(model, tokenizer, "para", [TEXTS[0]], [TEXTS[1]])[0].softmax(-1)[0]
    assert list(out) == ["para"]
    assert out["para"][0]["score"] == pytest.approx(float(probabilities.max()), 1e-5)
    with pytest.raises(ValueError, match="text_pairs"):
        model.predict(TEXTS, tasks=["para"], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="no head"):
        model.predict(TEXTS, tasks=["nope"], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="one pair per text"):
        model.predict(TEXTS, text_pairs=["x"], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="tokenizer"):
        model.predict(TEXTS)  # built in memory: no saved tokenizer to find


def test_pipeline_matches_predict_and_takes_pairs_and_lists(model, tokenizer):
    pipe = pipeline("multi-task", model=model, tokenizer=tokenizer)
    assert isinstance(pipe, MultiTaskPipeline)
    single = pipe(TEXTS[0], tasks=["sentiment", "score"])
    expected = model.predict([TEXTS[0]], tasks=["sentiment", "score"], tokenizer=tokenizer)
    assert single == {task: rows[0] for task, rows in expected.items()}
    many = pipe([TEXTS[0], {"text": TEXTS[0], "text_pair": TEXTS[1]}])
    assert "para" not in many[0] and many[1]["para"]["label"] in ("other", "same")
    assert many[0]["sentiment"] == pytest.approx(single["sentiment"])


def trained_and_saved(tmp_path, tiny_encoder_dir, tokenizer) -> tuple[str, dict]:
    tasks = [Task("sentiment", label_names=["neg", "pos"]), Task("score", "regression")]
    rows = sentiment_rows(16)
    scores = {"text": SENTENCES[:8], "label": [len(s) / 40 for s in SENTENCES[:8]]}
    data = {"sentiment": tokenize_task_dataset(tasks[0], datasets.Dataset.from_dict(rows), tokenizer, 32),
            "score": tokenize_task_dataset(tasks[1], datasets.Dataset.from_dict(scores), tokenizer, 32)}
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, tasks, tokenizer=tokenizer)
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path / "run"), combiner="mgda", max_steps=2,
                                      per_device_train_batch_size=4, report_to="none", use_cpu=True,
                                      save_strategy="no")
    trainer = MultiTaskTrainer(model, args, train_dataset=data, eval_dataset=data, processing_class=tokenizer)
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model()
    return args.output_dir, metrics


def test_saved_directory_has_tokenizer_auto_map_and_a_hub_model_card(tmp_path, tiny_encoder_dir, tokenizer):
    out, metrics = trained_and_saved(tmp_path, tiny_encoder_dir, tokenizer)
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "tokenizer.json", "hf_mtl_auto.py", "README.md"} <= files
    assert not any(name.startswith("checkpoint") for name in files)
    card = ModelCard.load(os.path.join(out, "README.md"))  # the Hub's parser (what push_to_hub uploads)
    assert card.data.library_name == "transformers" and "hf_mtl" in card.data.tags
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[("sentiment", "accuracy")] == pytest.approx(metrics["eval_sentiment_accuracy"])
    assert results[("score", "pearson")] == pytest.approx(metrics["eval_score_pearson"])
    assert "model-index" in card.content and "| sentiment | single_sentence_classification | main | 1 | neg, pos |" in card.text
    assert "Combiner: `mgda`." in card.text
    config = json.loads(open(os.path.join(out, "config.json")).read())
    assert config["auto_map"]["AutoModel"] == "hf_mtl_auto.MultiTaskModel"
    assert config["pad_token_id"] == tokenizer.pad_token_id


def test_task_metrics_keeps_tasks_sharing_a_prefix_apart():
    tasks = [Task("a", num_labels=2), Task("a_b", num_labels=2)]
    got = task_metrics({"eval_a_accuracy": 0.5, "eval_a_b_accuracy": 0.75, "eval_loss": 1.0, "eval_a_b_loss": 2.0},
                       tasks)
    assert got == {"a": {"accuracy": 0.5}, "a_b": {"accuracy": 0.75, "loss": 2.0}}


FRESH = textwrap.dedent("""
    import json, sys
    from transformers import AutoModel, AutoTokenizer
    out = {"hf_mtl_imported": "hf_mtl" in sys.modules}
    try:
        AutoModel.from_pretrained(sys.argv[1])
    except ValueError as error:
        out["plain_error"] = str(error)
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
    out["class"] = type(model).__module__ + "." + type(model).__name__
    out["predict"] = model.predict(["A fine film."], tasks="sentiment")
    from transformers import pipeline
    out["pipeline"] = pipeline("multi-task", model=sys.argv[1])("A fine film.", tasks="sentiment")
    print("RESULT=" + json.dumps(out))
""")


def test_fresh_process_loads_the_saved_directory(tmp_path, tiny_encoder_dir, tokenizer):
    out, _ = trained_and_saved(tmp_path, tiny_encoder_dir, tokenizer)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", FRESH, out], capture_output=True, text=True, timeout=300,
                            env=env, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.split("RESULT=")[-1])
    assert not got["hf_mtl_imported"]
    assert "trust_remote_code=True" in got["plain_error"]
    assert got["class"] == "hf_mtl.modeling.MultiTaskModel"
    model = MultiTaskModel.from_pretrained(out)
    expected = model.predict(["A fine film."], tasks="sentiment")
    assert got["predict"]["sentiment"][0]["label"] == expected["sentiment"][0]["label"]
    assert got["predict"]["sentiment"][0]["score"] == pytest.approx(expected["sentiment"][0]["score"], 1e-5)
    assert got["pipeline"]["sentiment"] == pytest.approx(got["predict"]["sentiment"][0])
