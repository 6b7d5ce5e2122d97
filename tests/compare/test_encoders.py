"""Encoders trained from scratch: the SMILES tokenizer, the spec entry, seeded initialisation, a run end to end."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import set_seed

from hf_mtl.compare.encoders import DEFAULT_SCRATCH_CONFIG, ScratchEncoder, smiles_tokenizer
from hf_mtl.compare.report import encoder_name
from hf_mtl.compare.runner import _DataCache, run_comparison, training_texts
from hf_mtl.compare.spec import parse_spec

TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


def test_smiles_tokenizer_splits_atoms_and_maps_unseen_tokens_to_unk():
    tokenizer = smiles_tokenizer(["CC(=O)Br", "c1ccccc1Cl", "[NH4+].O"])
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("CC(=O)Br")["input_ids"])
    assert tokens == ["[CLS]", "C", "C", "(", "=", "O", ")", "Br", "[SEP]"]
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("[NH4+]Cl1")["input_ids"])
    assert tokens == ["[CLS]", "[NH4+]", "Cl", "1", "[SEP]"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("CF")["input_ids"]) == ["[CLS]", "C", "[UNK]", "[SEP]"]
    batch = tokenizer(["C", "CCO"], padding=True)
    assert batch["input_ids"][0][-1] == tokenizer.pad_token_id and batch["attention_mask"][0] == [1, 1, 1, 0, 0]
    # the five specials and the 14 distinct tokens of the training texts
    assert len(tokenizer) == 5 + len({"C", "(", "=", "O", ")", "Br", "c", "1", "Cl", "[NH4+]", "."})


def test_scratch_spec_entry_and_config():
    encoder = ScratchEncoder.from_spec({"scratch": {"tokenizer": "smiles", "num_hidden_layers": 2}})
    assert encoder.tokenizer == "smiles"
    assert encoder.config == {**DEFAULT_SCRATCH_CONFIG, "num_hidden_layers": 2}
    tokenizer = smiles_tokenizer(["CCO", "C#N"])
    config = encoder.encoder_config(tokenizer, max_length=48)
    assert config.vocab_size == len(tokenizer) and config.pad_token_id == tokenizer.pad_token_id
    assert config.num_hidden_layers == 2 and config.max_position_embeddings == 512
    spec = parse_spec({"encoder": {"scratch": {"tokenizer": "embedded", **TINY}}}, task_names=["a", "b"])
    assert isinstance(spec.encoder, ScratchEncoder) and spec.encoder.tokenizer == "embedded"
    assert encoder_name(spec) == "BERT from scratch (1 layers × 16, random init per seed), embedded tokenizer"


@pytest.mark.parametrize(("entry", "message"), [
    ({"scratch": {"hidden_sise": 8}}, r"\['hidden_sise'\] are not BertConfig arguments"),
    ({"scratch": {"vocab_size": 8}}, "vocab_size comes from the tokenizer"),
    ({"random": {}}, "scratch"),
    (["scratch"], "scratch"),
])
def test_bad_scratch_entries_are_errors(entry, message):
    with pytest.raises(ValueError, match=message):
        parse_spec({"encoder": entry}, task_names=["a", "b"])


def test_positions_shorter_than_the_sequence_are_an_error():
    encoder = ScratchEncoder.from_spec({"scratch": {"max_position_embeddings": 16}})
    with pytest.raises(ValueError, match="max_position_embeddings=16 is shorter than max_seq_length=48"):
        encoder.encoder_config(smiles_tokenizer(["CCO"]), max_length=48)


def _scratch_spec(tokenizer: str, tasks: list[str], **extra):
    return parse_spec({"tasks": tasks, "encoder": {"scratch": {"tokenizer": tokenizer, **TINY}},
                       "max_seq_length": 16, "max_train_samples": 12, "max_eval_samples": 6,
                       "budget": {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3},
                       **extra}, task_names=tasks)


def test_scratch_weights_follow_the_seed():
    cache = _DataCache(_scratch_spec("embedded", ["rotten_tomatoes"]))
    tasks = cache.data(None).tasks
    weights = []
    for seed in (0, 0, 1):
        set_seed(seed)
        weights.append(cache.model(tasks).encoder.embeddings.word_embeddings.weight.detach().clone())
    assert weights[0].shape == (len(cache.tokenizer), TINY["hidden_size"])
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
    difference = float((weights[0] - weights[2]).abs().max())
    assert difference > 1e-3, difference


def test_scratch_smiles_tokenizer_is_built_from_the_training_texts_and_a_comparison_runs(tmp_path):
    spec = _scratch_spec("smiles", ["rotten_tomatoes", "debate_party"], seeds=[0], single_task=False)
    cache = _DataCache(spec)
    texts = training_texts(cache.source)
    assert len(texts) == 24 and all(isinstance(t, str) for t in texts)  # 12 training texts per task
    assert cache.encoder is None and cache.encoder_config.vocab_size == len(cache.tokenizer)
    report = run_comparison(spec, tmp_path)
    assert report.trained == ["linear__seed0"]
    record = json.loads((tmp_path / "runs" / "linear__seed0.json").read_text())
    assert record["max_steps"] == 2 and set(record["metrics"]) == {"rotten_tomatoes", "debate_party"}
    assert 0.0 <= record["metrics"]["rotten_tomatoes"]["accuracy"] <= 1.0
