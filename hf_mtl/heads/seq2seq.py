"""Seq2seq generation head: a Transformer decoder cross-attending to the shared encoder output.

By default the decoder is BERT2BERT-style (Rothe et al. 2020, arXiv 1907.12461): the encoder's own
architecture with causal self-attention and cross-attention added, warm-started from the pretrained
encoder's weights (the cross-attention starts fresh). Teacher forcing feeds the target shifted right
behind a start token; the loss is the token-mean cross-entropy; evaluation decodes greedily and scores
BLEU (Papineni et al. 2002) and chrF (Popović 2015) with sacrebleu (Post 2018, arXiv 1804.08771).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, EncoderDecoderCache

from hf_mtl.heads.base import IGNORE_INDEX, TaskHead
from hf_mtl.heads.checks import check_texts
from hf_mtl.heads.registry import register_head

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from hf_mtl.modeling import MultiTaskConfig
    from hf_mtl.tasks import Task

#: The special-token ids a decoder needs, as stored in ``MultiTaskConfig.decoder_token_ids``.
TOKEN_ID_KEYS = ("decoder_start_token_id", "eos_token_id", "pad_token_id")


def decoder_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Start, end and padding ids of a tokenizer: ``[CLS]``/``[SEP]``/``[PAD]`` for BERT-style vocabularies,
    else its ``bos``/``eos``/``pad`` tokens."""
    ids = {
        "decoder_start_token_id": tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id,
        "eos_token_id": tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    missing = [key for key, value in ids.items() if value is None]
    if missing:
        raise ValueError(f"The tokenizer has no token for {missing}; a seq2seq task needs start, end and padding ids.")
    return ids


@register_head("seq2seq")
class Seq2SeqHead(TaskHead):
    """A causal decoder (``AutoModelForCausalLM``) with cross-attention to ``z``; logits (B, target length, vocab).

    Labels are target token ids ending with the end token, padded with ``-100``; ``predict`` returns greedily
    generated ids (B, ≤ ``config.seq2seq_max_new_tokens``), ``-100`` after each row's end token.
    """

    default_metrics = ("sacrebleu", "chrf")
    needs_tokenizer = True

    def __init__(self, task: Task, config: MultiTaskConfig) -> None:
        super().__init__(task, config)
        ids = config.decoder_token_ids or {}
        missing = [key for key in TOKEN_ID_KEYS if ids.get(key) is None]
        if missing:
            raise ValueError(
                f"Task {task.name!r} is seq2seq: MultiTaskConfig.decoder_token_ids needs {missing} "
                "(MultiTaskModel.from_encoder reads them from the tokenizer)."
            )
        self.start_id, self.eos_id, self.pad_id = (int(ids[key]) for key in TOKEN_ID_KEYS)
        self.max_new_tokens = int(config.seq2seq_max_new_tokens)
        settings = {**config.encoder_config.to_dict(), "is_decoder": True, "add_cross_attention": True,
                    "bos_token_id": self.start_id, **ids}
        decoder_config = AutoConfig.for_model(**settings)
        try:
            self.decoder = AutoModelForCausalLM.from_config(decoder_config)
        except ValueError as error:
            raise ValueError(
                f"Task {task.name!r}: no causal-LM decoder exists for encoder type {decoder_config.model_type!r} "
                f"({error})."
            ) from error
        for key, value in {"bos_token_id": self.start_id, **ids}.items():
            setattr(self.decoder.generation_config, key, int(value))

    # --- data ---------------------------------------------------------------------------------------
    @classmethod
    def validate_labels(cls, task: Task, labels: pa.ChunkedArray, where: str, column: str) -> None:
        """Targets are non-empty strings."""
        check_texts(where, column, labels)

    @classmethod
    def encode_labels(
        cls, task: Task, labels: list[Any], tokenizer: PreTrainedTokenizerBase, max_length: int
    ) -> list[list[int]]:
        """Target token ids (no start token) followed by the end token, at most ``max_length`` ids."""
        eos = decoder_token_ids(tokenizer)["eos_token_id"]
        encoded = tokenizer(list(labels), add_special_tokens=False, truncation=True, max_length=max_length - 1)
        return [ids + [eos] for ids in encoded["input_ids"]]

    @classmethod
    def collate_labels(cls, task: Task | None, labels: Sequence[Any], width: int) -> torch.Tensor:
        """Target rows padded with ``-100`` to the longest target of the sub-batch."""
        longest = max(len(row) for row in labels)
        return torch.tensor([list(row) + [IGNORE_INDEX] * (longest - len(row)) for row in labels], dtype=torch.long)

    # --- model --------------------------------------------------------------------------------------
    def warm_start(self, encoder: PreTrainedModel) -> None:
        """Load the pretrained encoder's weights into the decoder's matching layers (BERT2BERT)."""
        weights = encoder.state_dict()
        result = self.decoder.base_model.load_state_dict(weights, strict=False)
        if len(result.unexpected_keys) == len(weights):
            raise ValueError(f"Task {self.task_name!r}: none of the encoder's weights fit the decoder.")

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Decoder inputs: the start token, then the labels without their last position (``-100`` → pad)."""
        start = labels.new_full((labels.shape[0], 1), self.start_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == IGNORE_INDEX, self.pad_id)

    def forward(self, hidden: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Teacher-forced logits for ``labels`` (or ``decoder_input_ids``); just the first step without them."""
        if batch.get("decoder_input_ids") is not None:
            decoder_inputs = batch["decoder_input_ids"]
        elif batch.get("labels") is not None:
            decoder_inputs = self.shift_right(batch["labels"])
        else:
            decoder_inputs = torch.full((hidden.shape[0], 1), self.start_id, device=hidden.device)
        return self.decoder(
            input_ids=decoder_inputs,
            encoder_hidden_states=hidden,
            encoder_attention_mask=batch.get("attention_mask"),
            use_cache=False,
        ).logits

    def example_losses(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each example's summed token cross-entropy and its number of target tokens."""
        labels = batch["labels"].long()
        if logits.shape[:2] != labels.shape:
            raise ValueError(
                f"Task {self.task_name!r}: logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}."
            )
        losses = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
        return losses.sum(dim=1), (labels != IGNORE_INDEX).sum(dim=1).to(losses.dtype)

    def loss(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Token-mean cross-entropy over the target tokens."""
        labels = batch["labels"].long()
        return F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX)

    @torch.no_grad()
    def predict(self, hidden: torch.Tensor, logits: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Greedy generation conditioned on ``z``: ids (B, ≤ max_new_tokens), ``-100`` after the end token."""
        start = torch.full((hidden.shape[0], 1), self.start_id, dtype=torch.long, device=hidden.device)
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        # Transformers 5 renamed generate's ``past_key_values`` argument to ``cache``.
        cache_key = "cache" if "cache" in inspect.signature(self.decoder.forward).parameters else "past_key_values"
        generated = self.decoder.generate(
            input_ids=start,
            encoder_hidden_states=hidden,
            encoder_attention_mask=batch.get("attention_mask"),
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            **{cache_key: cache},
        )[:, 1:]
        after_end = (generated == self.eos_id).long().cumsum(dim=1) - (generated == self.eos_id).long() > 0
        return generated.masked_fill(after_end, IGNORE_INDEX)

    def readable(
        self, hidden: torch.Tensor, logits: torch.Tensor, batch: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase
    ) -> list[dict[str, Any]]:
        """``{"generated_text": ...}`` per example: the greedy generation of :meth:`predict`, decoded."""
        rows = [[t for t in row if t != IGNORE_INDEX] for row in self.predict(hidden, logits, batch).tolist()]
        return [{"generated_text": text} for text in tokenizer.batch_decode(rows, skip_special_tokens=True)]

    def metric_arrays(self, predictions: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Object arrays of id lists (``-100`` dropped), one per example with a target."""
        keep = (labels != IGNORE_INDEX).any(dim=1).tolist()

        def id_lists(tensor: torch.Tensor) -> np.ndarray:
            rows = [[t for t in row if t != IGNORE_INDEX] for row, k in zip(tensor.tolist(), keep, strict=True) if k]
            array = np.empty(len(rows), dtype=object)
            array[:] = rows
            return array

        return id_lists(predictions), id_lists(labels)

    def compute_metrics(
        self, predictions: np.ndarray, references: np.ndarray, tokenizer: PreTrainedTokenizerBase | None = None
    ) -> dict[str, float]:
        """The task's text metrics (default BLEU and chrF) on the decoded ids."""
        if tokenizer is None:
            raise ValueError(f"Task {self.task_name!r} is seq2seq: its metrics need the tokenizer to decode ids.")
        hypotheses = tokenizer.batch_decode(list(predictions), skip_special_tokens=True)
        targets = tokenizer.batch_decode(list(references), skip_special_tokens=True)
        return super().compute_metrics(np.array(hypotheses, dtype=object), np.array(targets, dtype=object))
