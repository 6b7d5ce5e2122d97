"""Per-example losses: what gradient-guided loss masking keeps or drops.

A per-example loss function maps ``(module, batch)`` to :class:`ExampleLosses`: one loss ``ℓ_b`` per example
(the quantity whose gradient is aligned with ``g_clean``) and weights ``w_b`` such that ``Σ_b w_b ℓ_b`` (+ an
optional parameter-only term) is exactly the loss plain training minimises on that batch. Masking then
minimises ``Σ_b m_b w_b ℓ_b``: with every ``m_b = 1`` it is plain training.

* the heads of a :class:`~hf_mtl.MultiTaskModel` (``TaskHead.example_losses``): ``ℓ_b`` is the example's
  cross-entropy or squared error, summed over its tokens for token classification and seq2seq heads, and
  ``w_b = task weight / labelled items (examples or tokens) of that task in the batch``;
* seq2seq (any Transformers encoder-decoder, e.g. ``EncoderDecoderModel``): an example is a sentence pair,
  ``ℓ_b`` its *summed* token cross-entropy and ``w_b = 1 / target tokens in the batch`` (the token mean
  plain training uses);
* sequence classification (``*ForSequenceClassification``): cross-entropy, or squared error for one label.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hf_mtl.heads import IGNORE_INDEX
from hf_mtl.heads.base import class_losses
from hf_mtl.heads.regression import squared_errors
from hf_mtl.modeling import MultiTaskModel


@dataclass
class ExampleLosses:
    """``losses`` (B,) and ``weights`` (B,) with ``Σ weights·losses + extra`` = the batch's plain training loss.

    ``extra`` is a loss term that belongs to no example (a parameter penalty such as soft sharing); it is
    never masked. ``task_losses`` (multi-task models) holds each task's plain mean loss on the batch, for logging.
    """

    losses: torch.Tensor
    weights: torch.Tensor
    extra: torch.Tensor | None = None
    task_losses: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.losses.dim() != 1 or self.losses.shape != self.weights.shape:
            raise ValueError(
                f"ExampleLosses: losses and weights must both have shape (B,), got {tuple(self.losses.shape)} "
                f"and {tuple(self.weights.shape)}."
            )

    def total(self, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``Σ_b keep_b w_b ℓ_b + extra``; a dropped example contributes an exact zero (no ``0·inf`` NaN)."""
        losses = self.losses if keep is None else torch.where(keep, self.losses, torch.zeros_like(self.losses))
        total = (losses * self.weights.to(losses.dtype)).sum()
        return total if self.extra is None else total + self.extra


PerExampleLoss = Callable[[nn.Module, Mapping[str, Any]], ExampleLosses]


def multitask_example_losses(module: MultiTaskModel, batch: Mapping[str, Any]) -> ExampleLosses:
    """Per-example losses of a :class:`~hf_mtl.MultiTaskModel` batch in either layout.

    Each head gives ``(ℓ_{k,b}, items_{k,b})`` (``TaskHead.example_losses``). Disjoint layout
    (``task_batches``): examples are concatenated in task order, ``w_b = weight_k / n_k`` with ``n_k`` the
    labelled items of task ``k`` (tokens for token classification and seq2seq, whose ``ℓ_b`` sums the
    example's tokens); an example without labelled items gets weight 0. Shared-input layout (``inputs`` + ``labels``): ``ℓ_b = Σ_k weight_k·(B/n_k)·ℓ_{k,b}``
    and ``w_b = 1/B``, so with every label present ``ℓ_b`` is the example's weighted sum of task losses.
    Either way ``Σ w_b ℓ_b`` equals ``MultiTaskModel.forward(...).loss``.
    """
    losses: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    task_losses: dict[str, float] = {}
    if "task_batches" in batch:
        module.check_tasks(list(batch["task_batches"]))
        for name in module.task_names:
            sub_batch = batch["task_batches"].get(name)
            if sub_batch is None:
                continue
            if sub_batch.get("labels") is None:
                raise ValueError(f"Task {name!r}: the sub-batch has no labels; masking needs a loss per example.")
            head = module.heads[name]
            z = module.encode(sub_batch, task=name)
            example, counts = head.example_losses(head(z, sub_batch), sub_batch)
            present = (counts > 0).to(example.dtype)
            losses.append(example)
            weights.append(module.tasks[name].weight * present / counts.sum().clamp_min(1.0))
            task_losses[name] = float((example.detach() * present).sum() / counts.sum().clamp_min(1.0))
    elif "inputs" in batch:
        labels = batch.get("labels") or {}
        module.check_tasks(list(labels))
        if not labels:
            raise ValueError("Shared-input batch has no labels; masking needs a loss per example.")
        inputs = batch["inputs"]
        shared = module.encode(inputs) if module.config.sharing == "hard" else None
        combined = None
        for name in module.task_names:
            if name not in labels:
                continue
            head = module.heads[name]
            z = shared if shared is not None else module.encode(inputs, task=name)
            sub_batch = module.task_batch(inputs, labels, name)
            example, counts = head.example_losses(head(z, sub_batch), sub_batch)
            task_losses[name] = float(example.detach().sum() / counts.sum().clamp_min(1.0))
            term = module.tasks[name].weight * example.shape[0] / counts.sum().clamp_min(1.0) * example
            combined = term if combined is None else combined + term
        losses.append(combined)
        weights.append(torch.full_like(combined, 1.0 / combined.shape[0]))
    else:
        raise ValueError(
            f"A MultiTaskModel batch holds `task_batches` or `inputs` + `labels`; got keys {sorted(batch)}."
        )
    return ExampleLosses(torch.cat(losses), torch.cat(weights).detach(), module.soft_sharing_penalty(), task_losses)


def _model_inputs(module: nn.Module, batch: Mapping[str, Any], drop: tuple[str, ...]) -> dict[str, Any]:
    """The batch entries that name an argument of ``module.forward`` (extra columns such as ids are left out)."""
    parameters = inspect.signature(module.forward).parameters
    return {k: v for k, v in batch.items() if k not in drop and k in parameters}


def seq2seq_example_losses(module: nn.Module, batch: Mapping[str, Any]) -> ExampleLosses:
    """Summed token cross-entropy per sentence pair of an encoder-decoder model; ``w_b = 1/Σ tokens``.

    Decoder inputs come from ``labels`` the way the model itself derives them
    (``prepare_decoder_input_ids_from_labels``) unless the batch carries ``decoder_input_ids``; the model's own
    (mean) loss is not computed. Label ``-100`` marks padding.
    """
    labels = batch.get("labels")
    if labels is None:
        raise ValueError("seq2seq_example_losses: the batch has no `labels` (target token ids, -100 for padding).")
    inputs = _model_inputs(module, batch, drop=("labels",))
    if "decoder_input_ids" not in inputs:
        if not hasattr(module, "prepare_decoder_input_ids_from_labels"):
            raise ValueError(
                f"{type(module).__name__} cannot derive decoder inputs from labels; put `decoder_input_ids` in the batch."
            )
        inputs["decoder_input_ids"] = module.prepare_decoder_input_ids_from_labels(labels=labels)
    logits = module(**inputs, use_cache=False).logits
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"seq2seq_example_losses: logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}.")
    token_losses = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    tokens = (labels != IGNORE_INDEX).sum()
    example = token_losses.sum(dim=1)
    weights = torch.full_like(example, 1.0) / tokens.clamp_min(1).to(example.dtype)
    return ExampleLosses(example, weights.detach())


def sequence_classification_example_losses(module: nn.Module, batch: Mapping[str, Any]) -> ExampleLosses:
    """Cross-entropy per example of a ``*ForSequenceClassification`` model (squared error for one label)."""
    labels = batch.get("labels")
    if labels is None:
        raise ValueError("sequence_classification_example_losses: the batch has no `labels`.")
    logits = module(**_model_inputs(module, batch, drop=("labels",))).logits
    num_labels = logits.shape[-1]
    if num_labels == 1:
        example, counts = squared_errors(logits, labels)
    else:
        example, counts = class_losses(logits, labels, num_labels, type(module).__name__)
    return ExampleLosses(example, (counts / counts.sum().clamp_min(1.0)).detach())


def default_example_loss(module: nn.Module) -> PerExampleLoss:
    """The per-example loss for ``module``: MultiTaskModel heads, encoder-decoder seq2seq, or sequence classification."""
    if isinstance(module, MultiTaskModel):
        return multitask_example_losses
    config = getattr(module, "config", None)
    if config is not None and getattr(config, "is_encoder_decoder", False):
        return seq2seq_example_losses
    architectures = getattr(config, "architectures", None) or []
    if type(module).__name__.endswith("ForSequenceClassification") or any(
        a.endswith("ForSequenceClassification") for a in architectures
    ):
        return sequence_classification_example_losses
    raise ValueError(
        f"No built-in per-example loss for {type(module).__name__}; pass `per_example_loss=fn` with "
        "fn(module, batch) -> ExampleLosses (hf_mtl.masking.ExampleLosses)."
    )
