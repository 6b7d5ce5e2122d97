"""Seq2seq head: a BERT2BERT decoder on the shared encoder — loss, gradients, generation, save/load, BLEU,
per-example losses for masking, and the shared-input layout."""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
import torch

from hf_mtl import MultiTaskModel, Task
from hf_mtl.heads import Seq2SeqHead
from hf_mtl.masking import multitask_example_losses

SOURCES = ["In the beginning God created the heaven and the earth.", "And God said, Let there be light."]
TARGETS = ["At the first God made the heaven and the earth.", "God said, Let there be light."]


@pytest.fixture
def tasks() -> list[Task]:
    return [Task("translate", "seq2seq"), Task("sentiment", num_labels=2)]


@pytest.fixture
def model(tiny_encoder_dir, tasks) -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel.from_encoder(tiny_encoder_dir, tasks, seq2seq_max_new_tokens=6)


def translation_batch(tokenizer, task: Task) -> dict[str, torch.Tensor]:
    labels = Seq2SeqHead.encode_labels(task, TARGETS, tokenizer, max_length=32)
    return {**tokenizer(SOURCES, padding=True, return_tensors="pt"),
            "labels": Seq2SeqHead.collate_labels(task, labels, 0)}


def test_decoder_is_warm_started_task_specific_and_configured(model, tokenizer):
    head = model.heads["translate"]
    decoder = head.decoder
    assert decoder.config.is_decoder and decoder.config.add_cross_attention
    assert torch.equal(decoder.base_model.embeddings.word_embeddings.weight, model.encoder.embeddings.word_embeddings.weight)
    assert torch.equal(decoder.base_model.encoder.layer[1].attention.self.query.weight,
                       model.encoder.encoder.layer[1].attention.self.query.weight)
    assert (head.start_id, head.eos_id, head.pad_id) == (tokenizer.cls_token_id, tokenizer.sep_token_id,
                                                          tokenizer.pad_token_id)
    assert decoder.generation_config.eos_token_id == tokenizer.sep_token_id
    decoder_ids = {id(p) for p in decoder.parameters()}
    assert decoder_ids <= {id(p) for p in model.task_specific_parameters("translate")}
    assert not decoder_ids & {id(p) for p in model.shared_parameters()}


def test_loss_is_token_mean_cross_entropy_by_hand(model, tokenizer, tasks):
    batch = translation_batch(tokenizer, tasks[0])
    labels = batch["labels"]
    assert (labels[:, 0] != tokenizer.cls_token_id).all()  # no start token in the targets
    out = model(task_batches={"translate": batch})
    logits = out.logits["translate"]
    assert logits.shape == (*labels.shape, tokenizer.vocab_size)
    log_probs = logits.float().log_softmax(-1)
    picked = [-log_probs[b, t, labels[b, t]] for b in range(2) for t in range(labels.shape[1]) if labels[b, t] != -100]
    assert torch.allclose(out.task_losses["translate"], torch.stack(picked).mean(), atol=1e-6)
    shifted = model.heads["translate"].shift_right(labels)
    assert shifted[:, 0].eq(tokenizer.cls_token_id).all() and torch.equal(shifted[0, 1:], labels[0, :-1])
    assert not (shifted == -100).any()


def test_gradient_reaches_encoder_and_decoder(model, tokenizer, tasks):
    model(task_batches={"translate": translation_batch(tokenizer, tasks[0])}).loss.backward()
    decoder = model.heads["translate"].decoder.base_model
    for params in (model.encoder.encoder.parameters(), decoder.encoder.layer[0].crossattention.parameters(),
                   decoder.embeddings.parameters()):
        grads = [p.grad for p in params]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_predict_generates_and_stops_at_end_token(model, tokenizer, tasks):
    model.eval()
    head = model.heads["translate"]
    batch = translation_batch(tokenizer, tasks[0])
    z = model.encode(batch)
    predictions = head.predict(z, None, batch)
    assert predictions.shape[0] == 2 and 1 <= predictions.shape[1] <= 6
    bias = head.decoder.get_output_embeddings().bias
    with torch.no_grad():
        bias[tokenizer.sep_token_id] -= 1e4  # never ends: exactly max_new_tokens ids
        assert head.predict(z, None, batch).shape == (2, 6)
        bias[tokenizer.sep_token_id] += 2e4  # ends at once: the end token, then nothing
        assert head.predict(z, None, batch).tolist() == [[tokenizer.sep_token_id]] * 2
        bias[tokenizer.sep_token_id] -= 1e4
        bias[1000] += 50.0  # one token, then the end token for the second row only: -100 after it
    ends = head.predict(z, None, batch)
    after = (ends == tokenizer.sep_token_id).long().cumsum(1) - (ends == tokenizer.sep_token_id).long() > 0
    assert (ends[after] == -100).all() and (ends[~after] != -100).all()


def test_save_load_round_trip_reproduces_the_loss(model, tokenizer, tasks, tmp_path):
    batch = {"translate": translation_batch(tokenizer, tasks[0])}
    model.eval()
    loss = model(task_batches=batch).task_losses["translate"]
    model.save_pretrained(tmp_path)
    reloaded = MultiTaskModel.from_pretrained(tmp_path).eval()
    assert torch.allclose(reloaded(task_batches=batch).task_losses["translate"], loss)
    decoder = reloaded.heads["translate"].decoder
    assert decoder.get_output_embeddings().weight is decoder.get_input_embeddings().weight
    assert reloaded.config.seq2seq_max_new_tokens == 6


def test_bleu_and_chrf_through_sacrebleu_on_decoded_text(model, tokenizer, tasks):
    head = model.heads["translate"]
    labels = translation_batch(tokenizer, tasks[0])["labels"]
    hypothesis = Seq2SeqHead.collate_labels(None, Seq2SeqHead.encode_labels(
        tasks[0], ["At first God made heaven and earth.", "God said, Let there be light."], tokenizer, 32), 0)
    predictions, references = head.metric_arrays(hypothesis, labels)
    assert predictions.dtype == object and references[0][-1] == tokenizer.sep_token_id
    scores = head.compute_metrics(predictions, references, tokenizer)
    decoded = tokenizer.batch_decode(list(predictions), skip_special_tokens=True)
    targets = tokenizer.batch_decode(list(references), skip_special_tokens=True)
    assert list(scores) == ["sacrebleu", "chrf"]
    assert scores["sacrebleu"] == pytest.approx(sacrebleu.corpus_bleu(decoded, [targets]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(decoded, [targets]).score)
    assert 0 < scores["sacrebleu"] < 100
    perfect = head.compute_metrics(*head.metric_arrays(labels, labels), tokenizer)
    assert perfect == {"sacrebleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
    with pytest.raises(ValueError, match="metrics need the tokenizer"):
        head.compute_metrics(predictions, references)


def test_example_losses_sum_to_the_batch_loss(model, tokenizer, tasks):
    translate = translation_batch(tokenizer, tasks[0])
    sentiment = {**tokenizer(["good", "bad", "fine"], padding=True, return_tensors="pt"),
                 "labels": torch.tensor([1, 0, 1])}
    batch = {"task_batches": {"translate": translate, "sentiment": sentiment}}
    example = multitask_example_losses(model, batch)
    assert example.losses.shape == (5,)
    tokens = (translate["labels"] != -100).sum()
    assert torch.allclose(example.weights[:2], torch.full((2,), 1.0) / tokens)
    assert torch.allclose(example.total(), model(**batch).loss, atol=1e-6)
    head = model.heads["translate"]
    losses, counts = head.example_losses(head(model.encode(translate), translate), translate)
    assert counts.tolist() == (translate["labels"] != -100).sum(1).float().tolist()


def test_shared_input_layout_trains_a_seq2seq_head(model, tokenizer, tasks):
    translate = translation_batch(tokenizer, tasks[0])
    inputs = {k: v for k, v in translate.items() if k != "labels"}
    labels = {"translate": translate["labels"], "sentiment": torch.tensor([1, 0])}
    out = model(inputs=inputs, labels=labels)
    disjoint = model(task_batches={"translate": translate})
    assert torch.allclose(out.task_losses["translate"], disjoint.task_losses["translate"])
    example = multitask_example_losses(model, {"inputs": inputs, "labels": labels})
    assert torch.allclose(example.total(), out.loss, atol=1e-6)
    assert np.isfinite(out.loss.item())
