"""recipes/noisy_nmt.py on the user's files and on sequence-to-sequence checkpoints: tiny Marian- and T5-shaped
models with random weights, Marian's own SentencePiece tokenizer and a word-level one, all built offline."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import sentencepiece
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    MarianConfig,
    MarianMTModel,
    MarianTokenizer,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

ROOT = Path(__file__).resolve().parents[2]
NUMBERS = "one two three four five six seven eight".split()
NOMBRES = "un deux trois quatre cinq six sept huit".split()
TINY = ["--max_steps", "2", "--logging_steps", "1", "--use_cpu", "True", "--disable_tqdm", "True",
        "--per_device_train_batch_size", "4", "--masking_clean_batch_size", "2", "--generation_max_length", "6"]


def load_recipe():
    spec = importlib.util.spec_from_file_location("recipe_noisy_nmt_files", ROOT / "recipes" / "noisy_nmt.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recipe():
    return load_recipe()


def pairs(n: int, offset: int = 0) -> pd.DataFrame:
    """Counting in English → in French: pair i is words i, i+1 (mod 8); every target distinct."""
    rows = [(i + offset) % 8 for i in range(n)]
    return pd.DataFrame({"source": [f"{NUMBERS[i]} {NUMBERS[(i + 1) % 8]}" for i in rows],
                         "target": [f"{NOMBRES[i]} {NOMBRES[(i + 1) % 8]}" for i in rows]})


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    """Noisy pairs as JSON lines, clean pairs as CSV, test pairs as JSON lines."""
    paths = {"train": tmp_path / "noisy.jsonl", "clean": tmp_path / "trusted.csv", "test": tmp_path / "test.jsonl"}
    pairs(8).to_json(paths["train"], orient="records", lines=True)
    pairs(4, offset=3).to_csv(paths["clean"], index=False)
    pairs(3, offset=5).to_json(paths["test"], orient="records", lines=True)
    return {name: str(path) for name, path in paths.items()}


def file_options(files: dict[str, str]) -> list[str]:
    return ["--train_file", files["train"], "--clean_file", files["clean"], "--validation_file", files["test"]]


def word_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level, lower-cased, ``</s>`` after every text (as Marian's and T5's tokenizers do); pad id 0, eos 1."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(NUMBERS + NOMBRES[:5] + NOMBRES[6:])}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def marian_tokenizer(path: Path) -> MarianTokenizer:
    """Marian's own tokenizer (two SentencePiece models and a shared vocabulary), trained here on the counting
    words: what ``Helsinki-NLP/opus-mt-*`` checkpoints ship, at toy size."""
    for name, words in (("source", NUMBERS), ("target", NOMBRES)):
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter([" ".join(words)] * 4), model_prefix=str(path / name), model_type="word",
            vocab_size=len(words) + 2, pad_id=-1, bos_id=-1, eos_id=1, unk_id=2, minloglevel=2)
        (path / f"{name}.model").rename(path / f"{name}.spm")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in NUMBERS + NOMBRES:
        vocab.setdefault(f"\u2581{word}", len(vocab))
    (path / "vocab.json").write_text(json.dumps(vocab))
    return MarianTokenizer(source_spm=str(path / "source.spm"), target_spm=str(path / "target.spm"),
                           vocab=str(path / "vocab.json"))


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny_marian")
    tokenizer = marian_tokenizer(path)
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=32, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    MarianMTModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory) -> str:
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(word_tokenizer()), d_model=16, d_kv=8, d_ff=32, num_layers=1,
                      num_decoder_layers=1, num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    path = tmp_path_factory.mktemp("tiny_t5")
    T5ForConditionalGeneration(config).save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return str(path)


def parse(recipe, *argv: str):
    return recipe.parse_args(["--output_dir", "unused", *argv])[0]


def test_user_pairs_are_read_as_given_and_corrupted_only_when_asked(recipe, files):
    args = parse(recipe, *file_options(files))
    assert (args.misaligned_rate, args.max_train_samples, args.max_test_samples) == (0.0, None, None)
    noisy, clean, test = recipe.build_data(args, seed=0)
    assert (noisy["target"] == noisy["reference"]).all() and set(noisy["kind"]) == {recipe.AS_GIVEN}
    assert noisy["source"].tolist() == pairs(8)["source"].tolist()  # the file's order, every row
    assert (len(clean), len(test)) == (4, 3) and (clean["target"] == pairs(4, offset=3)["target"]).all()
    assert test["reference"].tolist() == pairs(3, offset=5)["target"].tolist()

    args = parse(recipe, *file_options(files), "--misaligned_rate", "0.5", "--copied_rate", "0.25")
    noisy, _, _ = recipe.build_data(args, seed=0)
    assert noisy["kind"].value_counts().to_dict() == {"misaligned": 4, "copied": 2, "intact": 2}
    misaligned = noisy[noisy["kind"] == "misaligned"]
    assert (misaligned["target"] != misaligned["reference"]).all()
    assert set(misaligned["target"]) <= set(pairs(8)["target"])  # another row's target
    copied = noisy[noisy["kind"] == "copied"]
    assert (copied["target"] == copied["source"]).all()


def test_columns_can_be_renamed(recipe, tmp_path, files):
    renamed = tmp_path / "renamed.csv"
    pairs(5).rename(columns={"source": "en", "target": "fr"}).to_csv(renamed, index=False)
    args = parse(recipe, "--train_file", str(renamed), "--validation_file", str(renamed), "--methods", "baseline",
                 "--source_column", "en", "--target_column", "fr", "--max_train_samples", "4")
    noisy, clean, test = recipe.build_data(args, seed=0)
    assert noisy["reference"].tolist() == pairs(4)["target"].tolist() and len(test) == 5 and len(clean) == 0


def test_bad_user_files_are_named(recipe, tmp_path, files):
    def build(*argv: str):
        return recipe.build_data(parse(recipe, *argv), seed=0)

    with pytest.raises(ValueError, match=r"--train_file: file '.*noisy.jsonl' has no column 'en' \(columns: "
                                         r"\['source', 'target'\]\)"):
        build(*file_options(files), "--source_column", "en")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"--clean_file, split 'clean': file '.*empty.jsonl' is empty"):
        build("--train_file", files["train"], "--clean_file", str(empty), "--validation_file", files["test"])
    text = tmp_path / "pairs.txt"
    text.write_text("one two\tun deux\n")
    with pytest.raises(ValueError, match=r"cannot tell the format of '.*pairs.txt' from its extension '.txt'"):
        build("--train_file", str(text), "--validation_file", files["test"], "--methods", "baseline")
    blank = tmp_path / "blank.csv"
    blank.write_text("source,target\none two,un deux\nthree four,\n")
    with pytest.raises(ValueError, match=r"--validation_file: file '.*blank.csv', column 'target': row 1 is blank or "
                                         r"not text \(read as nan\); 1 such row"):
        build("--train_file", files["train"], "--validation_file", str(blank), "--methods", "baseline")


def test_options_that_do_not_fit_the_data_are_refused(recipe, files):
    with pytest.raises(ValueError, match="--train_file needs --validation_file"):
        parse(recipe, "--train_file", files["train"])
    with pytest.raises(ValueError, match="--clean_file needs --train_file"):
        parse(recipe, "--clean_file", files["clean"])
    with pytest.raises(ValueError, match="'baseline,example' needs --clean_file"):
        parse(recipe, "--train_file", files["train"], "--validation_file", files["test"], "--methods",
              "baseline,example")
    with pytest.raises(ValueError, match=r"\['clean_size'\] apply to the embedded Bible only"):
        parse(recipe, *file_options(files), "--clean_size", "10")
    embedded = parse(recipe)
    assert (embedded.misaligned_rate, embedded.max_train_samples, embedded.clean_size) == (0.4, 3000, 200)


def test_a_seq2seq_checkpoint_refuses_the_warm_start_options(recipe, marian_dir, tiny_encoder_dir):
    with pytest.raises(ValueError, match=r"\['--decoder_layers', '--freeze_encoder'\] shape the warm start .* "
                                         r"sequence-to-sequence checkpoint \(marian\)"):
        recipe.model_source(parse(recipe, "--model_name_or_path", marian_dir, "--decoder_layers", "1",
                                  "--freeze_encoder", "False"))
    args = parse(recipe, "--model_name_or_path", marian_dir)
    assert not recipe.model_source(args).warm_start and args.decoder_layers is None
    args = parse(recipe, "--model_name_or_path", tiny_encoder_dir, "--decoder_layers", "1")
    assert recipe.model_source(args).warm_start
    assert (args.decoder_layers, args.freeze_encoder, args.new_parameters_lr_multiplier) == (1, True, 10.0)


@pytest.mark.parametrize("checkpoint", ["marian_dir", "t5_dir"])
def test_every_method_trains_a_seq2seq_checkpoint_on_user_files(recipe, checkpoint, files, tmp_path, request):
    path = request.getfixturevalue(checkpoint)
    out = tmp_path / "run"
    metrics = recipe.main(["--model_name_or_path", path, *file_options(files), "--misaligned_rate", "0.5",
                           "--output_dir", str(out), *TINY])
    assert set(metrics) == {"copy_source", "baseline", "example", "batch"}
    assert metrics["copy_source"]["bleu"] == 0.0  # English sources against French references
    assert all(0.0 <= m["bleu"] <= 100.0 and m["test_token_loss"] > 0 for k, m in metrics.items() if k != "copy_source")
    assert metrics["baseline"]["examples"][0]["reference"] == "six sept"
    report = json.loads((out / "noise_report.json").read_text())
    assert (report["model"], report["warm_start"], report["kinds"]) == (path, False, {"misaligned": 4, "intact": 4})
    example = report["methods"]["example"]
    assert example["decisions_misaligned"] + example["decisions_intact"] == 2 * 4 and example["decisions_unknown"] == 0


def test_pairs_as_given_have_no_known_kind_in_the_masking_report(recipe, marian_dir, files, tmp_path):
    out = tmp_path / "run"
    recipe.main(["--model_name_or_path", marian_dir, *file_options(files), "--methods", "example",
                 "--output_dir", str(out), *TINY])
    report = json.loads((out / "noise_report.json").read_text())
    assert report["kinds"] == {recipe.AS_GIVEN: 8}
    example = report["methods"]["example"]
    assert example["decisions_unknown"] == 2 * 4 and example["masked_rate_corrupted"] is None
    assert 0.0 <= example["mean_logged_masked_fraction"] <= 1.0


def test_t5_sources_get_the_prefix(recipe, t5_dir, files):
    args = parse(recipe, "--model_name_or_path", t5_dir, *file_options(files), "--source_prefix", "two ")
    source = recipe.model_source(args)
    noisy, _, _ = recipe.build_data(args, seed=0)
    encoded = recipe.tokenize(noisy.head(1), word_tokenizer(), 16, source)
    tokenizer = word_tokenizer()
    assert encoded["input_ids"][0] == tokenizer("two one two")["input_ids"]
    assert encoded["labels"][0] == tokenizer("un deux")["input_ids"]  # ends with </s>, no start token
