"""A mixture with a seq2seq task trains through MultiTaskTrainer with MGDA in both gradient modes."""

from __future__ import annotations

import datasets
import pytest
import sacrebleu
import torch

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task
from hf_mtl.combiners import available_combiners
from hf_mtl.data import tokenize_task_dataset

SOURCES = ["In the beginning God created the heaven and the earth.", "And God said, Let there be light.",
           "Jesus wept.", "The Lord is my shepherd; I shall not want."]
TARGETS = ["At the first God made the heaven and the earth.", "God said, Let there be light.",
           "Jesus was weeping.", "The Lord takes care of me as his sheep; I will not be without any good thing."]


TASKS = [Task("translate", "seq2seq"), Task("sentiment", num_labels=2), Task("score", "regression")]


def mixture(tokenizer):
    raw = {
        "translate": datasets.Dataset.from_dict({"text": SOURCES * 3, "label": TARGETS * 3}),
        "sentiment": datasets.Dataset.from_dict({"text": ["good", "bad", "fine", "awful"] * 3, "label": [1, 0] * 6}),
        "score": datasets.Dataset.from_dict({"text": ["a", "b c", "d e f"] * 4, "label": [0.1, 0.5, 0.9] * 4}),
    }
    return {t.name: tokenize_task_dataset(t, raw[t.name], tokenizer, max_length=24) for t in TASKS}


@pytest.mark.parametrize("combiner", available_combiners())
def test_every_combiner_trains_a_mixture_with_a_seq2seq_task(combiner, tmp_path, tiny_encoder_dir, tokenizer):
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, TASKS)
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=6, max_steps=1,
                                      learning_rate=1e-3, save_strategy="no", report_to=[], use_cpu=True,
                                      disable_tqdm=True, combiner=combiner)
    trainer = MultiTaskTrainer(model, args, train_dataset=mixture(tokenizer), processing_class=tokenizer)
    trainer.train()
    record = trainer.last_step
    assert not record.skipped and torch.isfinite(record.losses).all() and torch.isfinite(record.weights).all()


@pytest.mark.parametrize("mode", ["params", "encoder_output"])
def test_seq2seq_task_trains_in_a_mixture(tmp_path, tiny_encoder_dir, tokenizer, mode):
    tasks = TASKS
    train = mixture(tokenizer)
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, tasks)
    decoder_before = model.heads["translate"].decoder.base_model.encoder.layer[0].crossattention.self.query.weight.clone()
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=6, max_steps=2,
                                      learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[],
                                      use_cpu=True, disable_tqdm=True, combiner="mgda", gradient_mode=mode)
    trainer = MultiTaskTrainer(model, args, train_dataset=train, processing_class=tokenizer)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss_translate" in h]
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(h["loss_translate"])) for h in logged)
    decoder_after = model.heads["translate"].decoder.base_model.encoder.layer[0].crossattention.self.query.weight
    assert not torch.equal(decoder_before, decoder_after)
    # HF-native evaluation: generation through prediction_step, BLEU/chrF through sacrebleu.
    evaluation = {"translate": train["translate"].select(range(4)), "sentiment": train["sentiment"]}
    metrics = trainer.evaluate(evaluation)
    assert 0.0 <= metrics["eval_translate_sacrebleu"] <= 100.0 and "eval_translate_chrf" in metrics
    assert "eval_sentiment_accuracy" in metrics and "eval_translate_loss" in metrics
    output = trainer.predict({"translate": evaluation["translate"]})
    generated = output.predictions["translate"]
    assert generated.shape[0] == 4
    hypotheses = [tokenizer.decode([t for t in row if t >= 0], skip_special_tokens=True) for row in generated]
    expected = sacrebleu.corpus_bleu(hypotheses, [TARGETS]).score
    assert output.metrics["test_translate_sacrebleu"] == pytest.approx(expected, abs=1e-6)
