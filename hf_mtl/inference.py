"""Inference on raw text: :func:`predict_texts` (behind :meth:`MultiTaskModel.predict`) and a ``transformers``
pipeline, :class:`MultiTaskPipeline`, registered as ``"multi-task"``.

Every task's head turns its logits into readable results (:meth:`hf_mtl.heads.TaskHead.readable`): a class
name and its softmax probability, a regression value, per-word tags, or generated text. The output follows the
Transformers pipelines' shapes (``{"label", "score"}`` as in ``text-classification``, per-word ``entity`` dicts as
in ``token-classification``, ``{"generated_text"}`` as in ``text2text-generation``), keyed by task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoModel, AutoTokenizer, Pipeline, PreTrainedTokenizerBase
from transformers.pipelines import PIPELINE_REGISTRY

if TYPE_CHECKING:
    from hf_mtl.modeling import MultiTaskModel

#: The task name under which :class:`MultiTaskPipeline` is registered with ``transformers.pipeline``.
PIPELINE_TASK = "multi-task"


def model_tokenizer(model: MultiTaskModel) -> PreTrainedTokenizerBase:
    """The tokenizer saved next to a model loaded with ``from_pretrained`` (``trainer.save_model`` writes it)."""
    source = model.name_or_path
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(
            f"No tokenizer could be loaded from {source!r} ({error}). Pass tokenizer=..., or save the model with "
            "trainer.save_model() (a MultiTaskTrainer with processing_class=tokenizer saves it next to the weights)."
        ) from None


def choose_tasks(model: MultiTaskModel, tasks: str | Sequence[str] | None, has_pairs: bool) -> list[str]:
    """The tasks to run: the named ones (unknown names and pair tasks without pairs raise), or every task the
    inputs fit (sentence-pair tasks only when ``text_pairs`` are given)."""
    if tasks is None:
        return [name for name, task in model.tasks.items() if has_pairs or not task.head_class().requires_pair]
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    model.check_tasks(names)
    missing = [name for name in names if model.tasks[name].head_class().requires_pair and not has_pairs]
    if missing:
        raise ValueError(f"Task(s) {missing} classify sentence pairs: pass text_pairs= (one per text).")
    return names


@torch.no_grad()
def predict_texts(
    model: MultiTaskModel,
    texts: str | Sequence[str],
    text_pairs: str | Sequence[str] | None = None,
    tasks: str | Sequence[str] | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """``{task: [result per text]}`` for raw ``texts`` (and ``text_pairs`` for pair tasks); see
    :meth:`hf_mtl.modeling.MultiTaskModel.predict`."""
    single = isinstance(texts, str)
    texts = [texts] if single else list(texts)
    if text_pairs is not None:
        text_pairs = [text_pairs] if isinstance(text_pairs, str) else list(text_pairs)
        if len(text_pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs; give one pair per text.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    tokenizer = tokenizer or model_tokenizer(model)
    names = choose_tasks(model, tasks, text_pairs is not None)
    limit = getattr(model.config.encoder_config, "max_position_embeddings", None) or tokenizer.model_max_length
    max_length = max_length or min(tokenizer.model_max_length, limit)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    try:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            pairs = None if text_pairs is None else text_pairs[start:start + batch_size]
            for uses_pair in (False, True):
                group = [n for n in names if _uses_pair(model, n, pairs is not None) == uses_pair]
                if group:
                    batch = _encode(tokenizer, chunk, pairs if uses_pair else None, max_length, device)
                    for name, rows in _run_heads(model, group, batch, tokenizer).items():
                        results[name].extend(rows)
    finally:
        model.train(was_training)
    return results


def _uses_pair(model: MultiTaskModel, name: str, has_pairs: bool) -> bool:
    head = model.tasks[name].head_class()
    return head.requires_pair or (head.accepts_pair and has_pairs)


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], pairs: list[str] | None, max_length: int, device: torch.device
) -> dict[str, Any]:
    """Encoder inputs on ``device`` plus what the heads need to report words: ``text``, ``word_ids`` and
    ``offset_mapping`` (fast tokenizers only)."""
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=True, return_tensors="pt",
                        return_offsets_mapping=tokenizer.is_fast)
    batch: dict[str, Any] = {"text": texts}
    if tokenizer.is_fast:
        batch["word_ids"] = [encoded.word_ids(i) for i in range(len(texts))]
        batch["sequence_ids"] = [encoded.sequence_ids(i) for i in range(len(texts))]
        batch["offset_mapping"] = encoded.pop("offset_mapping").tolist()
    batch.update({key: value.to(device) for key, value in encoded.items()})
    return batch


def _run_heads(
    model: MultiTaskModel, names: list[str], batch: dict[str, Any], tokenizer: PreTrainedTokenizerBase
) -> dict[str, list[dict[str, Any]]]:
    shared = model.encode(batch) if model.config.sharing == "hard" else None
    out = {}
    for name in names:
        hidden = shared if shared is not None else model.encode(batch, task=name)
        head = model.heads[name]
        out[name] = head.readable(hidden, head(hidden, batch), batch, tokenizer)
    return out


class MultiTaskPipeline(Pipeline):
    """``pipeline("multi-task", model=DIR)``: per input, ``{task: result}`` with the results of
    :meth:`~hf_mtl.modeling.MultiTaskModel.predict`.

    An input is a text, a ``{"text": ..., "text_pair": ...}`` dict, or a list of either (a list of results comes
    back). ``tasks=`` (a name or a list) restricts the tasks run.
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, tasks: str | Sequence[str] | None = None, **kwargs: Any
                             ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        forward = {"tasks": tasks} if tasks is not None else {}
        return {}, forward, {}

    def preprocess(self, inputs: str | dict[str, str]) -> dict[str, Any]:
        if isinstance(inputs, str):
            return {"text": inputs, "text_pair": None}
        if isinstance(inputs, dict) and isinstance(inputs.get("text"), str):
            return {"text": inputs["text"], "text_pair": inputs.get("text_pair")}
        raise ValueError(f"A multi-task pipeline input is a text or a {{'text', 'text_pair'}} dict, got {inputs!r}.")

    def _forward(self, model_inputs: dict[str, Any], tasks: str | Sequence[str] | None = None
                 ) -> dict[str, list[dict[str, Any]]]:
        pair = model_inputs["text_pair"]
        return predict_texts(self.model, [model_inputs["text"]], None if pair is None else [pair], tasks,
                             self.tokenizer, batch_size=1)

    def postprocess(self, model_outputs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
        return {task: rows[0] for task, rows in model_outputs.items()}


def register_pipeline() -> None:
    """Register :class:`MultiTaskPipeline` as ``transformers.pipeline("multi-task", ...)``."""
    if PIPELINE_TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(PIPELINE_TASK, pipeline_class=MultiTaskPipeline, pt_model=AutoModel,
                                            type="text")
