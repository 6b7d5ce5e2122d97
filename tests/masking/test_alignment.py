"""JVP alignments ``<∇ℓ_b, v>`` against brute-force per-example gradients; per-example losses against the model's loss."""

from __future__ import annotations

import datasets
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    MarianConfig,
    MarianMTModel,
    T5Config,
    T5ForConditionalGeneration,
)

from hf_mtl import MultiTaskModel, Task
from hf_mtl.data import MultiTaskCollator, SharedInputCollator, tokenize_shared_dataset
from hf_mtl.masking import (
    ExampleLosses,
    example_alignments,
    losses_and_alignments,
    multitask_example_losses,
    seq2seq_example_losses,
)

from .helpers import (
    SENTIMENT,
    SOURCES,
    TARGETS,
    per_example_gradients,
    sentiment_dataset,
    seq2seq_collator,
    seq2seq_dataset,
    tiny_seq2seq,
)


def random_direction(module, seed=1, pattern=None):
    generator = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=generator) for n, p in module.named_parameters()
            if p.requires_grad and (pattern is None or pattern in n)}


def brute_force_alignments(module, result, direction):
    names = list(direction)
    params = dict(module.named_parameters())
    jacobian = per_example_gradients(result.losses, [params[n] for n in names])
    vector = torch.cat([direction[n].double().reshape(-1) for n in names])
    return jacobian @ vector


def assert_alignments_close(jvp, brute):
    scale = float(brute.abs().max())
    torch.testing.assert_close(jvp.double(), brute, rtol=1e-4, atol=1e-5 * scale)


@pytest.fixture
def classifier(tiny_encoder_dir):
    torch.manual_seed(0)
    return MultiTaskModel.from_encoder(tiny_encoder_dir, [SENTIMENT, Task("length", num_labels=3)])


@pytest.fixture
def disjoint_batch(tokenizer):
    sentiment = sentiment_dataset(tokenizer, 5)
    length = sentiment_dataset(tokenizer, 3, offset=5).map(lambda row: {"labels": len(row["input_ids"]) % 3})
    features = [{**row, "__task__": "sentiment"} for row in sentiment] + [{**row, "__task__": "length"} for row in length]
    return MultiTaskCollator(tokenizer, ["sentiment", "length"])(features)


@pytest.mark.parametrize("pattern", [None, "encoder.encoder.layer.1", "heads."])
def test_classification_alignments_equal_per_example_gradients(classifier, disjoint_batch, pattern):
    direction = random_direction(classifier, pattern=pattern)
    result, alignments = losses_and_alignments(classifier, multitask_example_losses, disjoint_batch, direction)
    assert alignments.shape == (8,) and not alignments.requires_grad
    assert_alignments_close(alignments, brute_force_alignments(classifier, result, direction))


def test_shared_input_alignments_equal_per_example_gradients(tiny_encoder_dir, tokenizer):
    tasks = [SENTIMENT, Task("score", "regression")]
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, tasks)
    raw = datasets.Dataset.from_dict({"text": ["good", "bad film", "a long and dull one", "fine"],
                                      "label_sentiment": [1, 0, 0, 1], "label_score": [0.9, 0.1, 0.2, 0.7]})
    batch = SharedInputCollator(tokenizer, tasks)(list(tokenize_shared_dataset(tasks, raw, tokenizer, 16)))
    direction = random_direction(model)
    result, alignments = losses_and_alignments(model, multitask_example_losses, batch, direction)
    assert_alignments_close(alignments, brute_force_alignments(model, result, direction))
    torch.testing.assert_close(result.total(), model(**batch).loss)


def test_seq2seq_alignments_equal_per_example_gradients(tokenizer):
    model = tiny_seq2seq(tokenizer)
    assert model.config.encoder._attn_implementation == "sdpa"  # the fused kernel has no forward-mode rule
    batch = seq2seq_collator(tokenizer)(list(seq2seq_dataset(tokenizer, SOURCES[:5], TARGETS[:5])))
    assert (batch["labels"] == -100).any(), "targets of different lengths must be padded"
    direction = random_direction(model)
    result, alignments = losses_and_alignments(model, seq2seq_example_losses, batch, direction)
    assert_alignments_close(alignments, brute_force_alignments(model, result, direction))


def test_per_example_losses_reproduce_the_models_own_losses(classifier, disjoint_batch, tokenizer):
    torch.testing.assert_close(multitask_example_losses(classifier, disjoint_batch).total(),
                               classifier(**disjoint_batch).loss)
    model = tiny_seq2seq(tokenizer)
    batch = seq2seq_collator(tokenizer)(list(seq2seq_dataset(tokenizer, SOURCES[:4], TARGETS[:4])))
    result = seq2seq_example_losses(model, batch)
    with pytest.warns(FutureWarning):  # EncoderDecoderModel's own loss is deprecated, hence not used by masking
        reference = model(**batch).loss
    torch.testing.assert_close(result.total(), reference, rtol=1e-5, atol=1e-6)
    tokens = (batch["labels"] != -100).sum(dim=1)
    assert torch.all(result.losses > 0) and torch.equal(result.weights, torch.full((4,), 1.0 / tokens.sum()))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # read-only fixtures
@given(a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_alignments_are_linear_in_the_direction(a, b, classifier, disjoint_batch):
    v, w = random_direction(classifier, seed=1), random_direction(classifier, seed=2)
    combined = {n: a * v[n] + b * w[n] for n in v}
    left = example_alignments(classifier, multitask_example_losses, disjoint_batch, combined)
    right = (a * example_alignments(classifier, multitask_example_losses, disjoint_batch, v)
             + b * example_alignments(classifier, multitask_example_losses, disjoint_batch, w))
    torch.testing.assert_close(left, right, rtol=1e-4, atol=1e-4 * float(right.abs().max()) + 1e-6)


def test_bf16_autocast_alignments_follow_float32(classifier, disjoint_batch):
    direction = random_direction(classifier)
    exact = example_alignments(classifier, multitask_example_losses, disjoint_batch, direction)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = example_alignments(classifier, multitask_example_losses, disjoint_batch, direction)
    assert torch.isfinite(low).all()
    assert float((low - exact).abs().max()) < 0.05 * float(exact.abs().max())


def test_bad_directions_are_rejected(classifier, disjoint_batch):
    with pytest.raises(ValueError, match="direction is empty"):
        example_alignments(classifier, multitask_example_losses, disjoint_batch, {})
    with pytest.raises(ValueError, match=r"parameter\(s\) \['nope'\]"):
        example_alignments(classifier, multitask_example_losses, disjoint_batch, {"nope": torch.zeros(1)})
    name, param = next(iter(classifier.named_parameters()))
    with pytest.raises(ValueError, match=f"Direction for '{name}' has shape"):
        example_alignments(classifier, multitask_example_losses, disjoint_batch, {name: torch.zeros(param.numel() + 1)})


def test_out_of_range_label_is_named(classifier, tokenizer):
    batch = MultiTaskCollator(tokenizer, ["sentiment"])(
        [{**row, "__task__": "sentiment"} for row in sentiment_dataset(tokenizer, 3, label=2)])
    with pytest.raises(ValueError, match=r"Task 'sentiment': label 2 is outside \[0, 2\)"):
        multitask_example_losses(classifier, batch)


def hub_seq2seq(kind: str, vocab_size: int = 40) -> torch.nn.Module:
    """Tiny random Marian-, T5- and BART-shaped models (their own attention and embedding code)."""
    torch.manual_seed(0)
    shared = dict(vocab_size=vocab_size, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
                  dropout=0.0, attention_dropout=0.0)
    if kind == "marian":
        return MarianMTModel(MarianConfig(**shared, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).eval()
    if kind == "bart":
        return BartForConditionalGeneration(BartConfig(**shared, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                                       decoder_start_token_id=2)).eval()
    return T5ForConditionalGeneration(T5Config(vocab_size=vocab_size, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                               num_heads=2, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                                               decoder_start_token_id=0)).eval()


def hub_seq2seq_batch(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    batch = {"input_ids": torch.randint(3, model.config.vocab_size, (4, 7), generator=generator),
             "attention_mask": torch.ones(4, 7, dtype=torch.long),
             "labels": torch.randint(3, model.config.vocab_size, (4, 5), generator=generator)}
    batch["input_ids"][0, 5:] = model.config.pad_token_id
    batch["attention_mask"][0, 5:] = 0
    batch["labels"][1, 3:] = -100
    return batch


@pytest.mark.parametrize("kind", ["marian", "t5", "bart"])
def test_hub_seq2seq_alignments_equal_per_example_gradients(kind):
    model = hub_seq2seq(kind)
    batch = hub_seq2seq_batch(model)
    direction = random_direction(model)
    if kind == "marian":
        # Marian starts decoding from the pad token, whose embedding row nn.Embedding(padding_idx=pad) leaves out of
        # the gradient by convention; the JVP is the exact derivative and keeps it (next test).
        direction["model.shared.weight"][model.config.pad_token_id] = 0.0
    result, alignments = losses_and_alignments(model, seq2seq_example_losses, batch, direction)
    assert_alignments_close(alignments, brute_force_alignments(model, result, direction))


def test_the_padding_row_of_a_tied_embedding_is_where_jvp_and_gradient_differ():
    model = hub_seq2seq("marian")
    batch = hub_seq2seq_batch(model)
    pad_row = torch.zeros_like(model.model.shared.weight)
    pad_row[model.config.pad_token_id] = torch.randn(pad_row.shape[1])
    result, alignments = losses_and_alignments(model, seq2seq_example_losses, batch, {"model.shared.weight": pad_row})
    gradient_side = brute_force_alignments(model, result, {"model.shared.weight": pad_row})
    # the gradient keeps only the tied output layer's use of the row; the derivative also has the start token's input
    assert float((alignments.double() - gradient_side).abs().min()) > 1e-3 * float(gradient_side.abs().max())


class WithoutForwardAD(torch.autograd.Function):
    """An operation with a backward rule only, like a custom kernel that nobody gave a JVP."""

    @staticmethod
    def forward(x):
        return x * 2.0

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad * 2.0


class OldStyleFunction(torch.autograd.Function):
    """``forward(ctx, ...)`` without ``setup_context``: torch.func cannot run it at all."""

    @staticmethod
    def forward(ctx, x):
        return x * 2.0

    @staticmethod
    def backward(ctx, grad):
        return grad * 2.0


class CustomOpModel(torch.nn.Module):
    def __init__(self, op: type[torch.autograd.Function] = WithoutForwardAD) -> None:
        super().__init__()
        self.below, self.above = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)
        self.op = op

    def forward(self, x):
        return self.above(self.op.apply(self.below(x)))


def custom_op_losses(module, batch):
    losses = torch.nn.functional.cross_entropy(module(batch["x"]), batch["labels"], reduction="none")
    return ExampleLosses(losses, torch.full_like(losses, 1.0 / len(losses)))


def test_an_op_without_forward_ad_is_named_and_parameters_above_it_still_work():
    torch.manual_seed(0)
    model = CustomOpModel()
    batch = {"x": torch.randn(4, 3), "labels": torch.tensor([0, 1, 1, 0])}
    with pytest.raises(NotImplementedError, match=r"forward-mode AD through CustomOpModel.*loss_masking='batch', or "
                                                  r"masking_parameters restricted to parameters above"):
        example_alignments(model, custom_op_losses, batch, random_direction(model))
    direction = random_direction(model, pattern="above.")
    result, alignments = losses_and_alignments(model, custom_op_losses, batch, direction)
    assert_alignments_close(alignments, brute_force_alignments(model, result, direction))
    with pytest.raises(NotImplementedError, match=r"uses a custom autograd.Function that torch.func cannot run"):
        example_alignments(CustomOpModel(OldStyleFunction), custom_op_losses, batch, direction)
