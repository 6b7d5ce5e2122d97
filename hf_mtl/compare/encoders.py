"""Encoders trained from scratch for a comparison: a small randomly initialised BERT and its tokenizer.

A spec's ``encoder`` is a hub id / folder (pretrained weights), ``null`` (the embedded MiniLM), or a mapping
``{scratch: {...}}``::

    encoder:
      scratch:
        tokenizer: smiles        # smiles | embedded | a tokenizer folder or hub id
        hidden_size: 128         # any further key is a transformers.BertConfig argument
        num_hidden_layers: 2

Nothing is downloaded: ``smiles`` builds an atom-level vocabulary from the training texts with the
``tokenizers`` library, ``embedded`` reuses the embedded MiniLM's WordPiece tokenizer. The encoder's weights
are drawn afresh in every run, after the run's seed is set (so seeds vary the initialisation too).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Atom-level SMILES tokens: bracket atoms, two-letter organic atoms, ring-closure labels and single characters
#: (the pattern of Schwaller et al. 2019, "Molecular Transformer", ACS Cent. Sci., arXiv 1811.02633).
SMILES_PATTERN = (r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|"
                  r"%[0-9]{2}|[0-9])")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TOKENIZER_KINDS = ("smiles", "embedded")
#: BertConfig defaults of a scratch encoder (a 4-layer, 256-wide BERT: about 3.2 M parameters besides the embeddings).
DEFAULT_SCRATCH_CONFIG = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                          "intermediate_size": 1024}


def smiles_tokenizer(texts: Iterable[str], model_max_length: int = 512) -> Any:
    """A ``PreTrainedTokenizerFast`` whose vocabulary is every SMILES token in ``texts`` (plus the specials).

    Each input is split with :data:`SMILES_PATTERN`, unknown tokens map to ``[UNK]``, and encodings are
    ``[CLS] … [SEP]`` as for BERT.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(SMILES_PATTERN), behavior="isolated")
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS)))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length, pad_token="[PAD]",
                                   unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


@dataclass(frozen=True)
class ScratchEncoder:
    """A randomly initialised BERT of ``config`` (``transformers.BertConfig`` arguments) and its tokenizer."""

    tokenizer: str = "smiles"
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, entry: Any) -> ScratchEncoder:
        """Parse the spec's ``{scratch: {tokenizer, **BertConfig arguments}}``; bad keys are errors."""
        if not isinstance(entry, dict) or set(entry) != {"scratch"}:
            raise ValueError(f"encoder must be a hub id/folder, null, or {{scratch: {{...}}}}, got {entry!r}.")
        options = dict(entry["scratch"] or {})
        tokenizer = str(options.pop("tokenizer", "smiles"))
        from transformers import BertConfig

        known = set(BertConfig().to_dict())
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"encoder.scratch: {unknown} are not BertConfig arguments.")
        if "vocab_size" in options:
            raise ValueError("encoder.scratch: vocab_size comes from the tokenizer; remove it.")
        return cls(tokenizer=tokenizer, config={**DEFAULT_SCRATCH_CONFIG, **options})

    def describe(self) -> str:
        """One line for reports: the architecture and the tokenizer."""
        c = self.config
        return (f"BERT from scratch ({c['num_hidden_layers']} layers × {c['hidden_size']}, random init per seed), "
                f"{self.tokenizer} tokenizer")

    def build_tokenizer(self, texts: Iterable[str], max_length: int) -> Any:
        """``smiles``: trained on ``texts``; ``embedded``: the embedded MiniLM's; otherwise a tokenizer folder/id."""
        from transformers import AutoTokenizer

        from hf_mtl.data.embedded import embedded_encoder_path

        if self.tokenizer == "smiles":
            return smiles_tokenizer(texts, model_max_length=max_length)
        return AutoTokenizer.from_pretrained(embedded_encoder_path() if self.tokenizer == "embedded" else self.tokenizer)

    def encoder_config(self, tokenizer: Any, max_length: int) -> Any:
        """The ``BertConfig``: vocabulary and padding id from ``tokenizer``, positions for ``max_length`` tokens."""
        from transformers import BertConfig

        config = dict(self.config)
        config.setdefault("max_position_embeddings", max(512, max_length))
        if config["max_position_embeddings"] < max_length:
            raise ValueError(f"encoder.scratch: max_position_embeddings={config['max_position_embeddings']} is "
                             f"shorter than max_seq_length={max_length}.")
        return BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **config)
