"""Shared pieces of the loss-masking tests: tiny seq2seq model and data, brute-force per-example gradients."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import torch
from transformers import BertConfig, BertLMHeadModel, BertModel, DataCollatorForSeq2Seq, EncoderDecoderModel

from hf_mtl import Task
from hf_mtl.data import tokenize_task_dataset

SOURCES = [
    "In the beginning God created the heaven and the earth.", "And the earth was without form, and void.",
    "And God said, Let there be light: and there was light.", "And God saw the light, that it was good.",
    "And God called the light Day, and the darkness he called Night.", "And the evening and the morning were the first day.",
    "And God made the firmament, and divided the waters.", "And God called the firmament Heaven.",
]
TARGETS = [
    "At the first God made the heaven and the earth.", "And the earth was waste and without form.",
    "And God said, Let there be light: and there was light.", "And God, looking on the light, saw that it was good.",
    "Naming the light, Day, and the dark, Night.", "And there was evening and there was morning, the first day.",
    "And God made the arch, to keep the waters apart.", "And God gave the arch the name of Heaven.",
]
REVIEWS = [
    "A gripping, beautifully acted film.", "Dull, overlong and badly written.", "I loved every minute of it.",
    "The plot makes no sense at all.", "A charming story with a warm heart.", "Tedious and predictable from start.",
    "Superb direction and a clever script.", "One of the worst movies this year.", "Funny, moving and smart.",
    "The actors seem bored throughout.", "An instant classic of the genre.", "Nothing here works, sadly.",
]
SENTIMENT = Task("sentiment", "single_sentence_classification", label_names=["neg", "pos"])


def sentiment_dataset(tokenizer, n: int, offset: int = 0, flip: bool = False, label: int | None = None):
    """``n`` reviews (cycling) labelled by their true polarity (even index = positive), or flipped, or fixed."""
    texts = [REVIEWS[(i + offset) % len(REVIEWS)] for i in range(n)]
    truth = [int((i + offset) % len(REVIEWS) % 2 == 0) for i in range(n)]
    labels = [label if label is not None else (1 - t if flip else t) for t in truth]
    raw = datasets.Dataset.from_dict({"text": texts, "label": labels})
    return tokenize_task_dataset(SENTIMENT, raw, tokenizer, max_length=24)


def tiny_seq2seq(tokenizer, seed: int = 0) -> EncoderDecoderModel:
    """An EncoderDecoderModel of two tiny random BERTs (2 layers, hidden 32) with its special tokens set."""
    torch.manual_seed(seed)
    common = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=48, max_position_embeddings=64, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    encoder = BertModel(BertConfig(**common))
    decoder = BertLMHeadModel(BertConfig(**common, is_decoder=True, add_cross_attention=True))
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = tokenizer.cls_token_id
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.sep_token_id
    return model


def seq2seq_dataset(tokenizer, sources: Sequence[str], targets: Sequence[str], max_length: int = 24):
    encoded = tokenizer(list(sources), truncation=True, max_length=max_length)
    encoded["labels"] = tokenizer(list(targets), truncation=True, max_length=max_length)["input_ids"]
    return datasets.Dataset.from_dict(dict(encoded))


def seq2seq_collator(tokenizer) -> DataCollatorForSeq2Seq:
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)


def per_example_gradients(losses: torch.Tensor, params: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    """(B, P) float64 matrix of ``∇ℓ_b``, one backward per example (the brute force the JVP replaces)."""
    rows = []
    for b in range(losses.numel()):
        grads = torch.autograd.grad(losses[b], list(params), retain_graph=True, allow_unused=True)
        rows.append(flat_gradient(grads, params))
    return torch.stack(rows)


def flat_gradient(grads: Sequence[torch.Tensor | None], params: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(g.double() if g is not None else torch.zeros(p.numel(), dtype=torch.float64)).reshape(-1)
                      for g, p in zip(grads, params, strict=True)])


def flat_params(params: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.detach().double().reshape(-1) for p in params])
