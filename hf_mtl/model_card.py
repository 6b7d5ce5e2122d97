"""The model card (``README.md``) written next to a saved model, in the Hugging Face Hub's format.

YAML front matter (``library_name``, ``tags``, ``datasets``, ``base_model`` and a ``model-index`` with one result per
task and metric, built with ``huggingface_hub.ModelCardData``/``EvalResult``: https://huggingface.co/docs/hub/model-cards)
followed by the tasks (kind, role, weight, labels), the combiner, the per-task evaluation metrics and how to load
the model. ``MultiTaskTrainer.save_model`` and ``push_to_hub`` write it (:meth:`MultiTaskTrainer.create_model_card`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_mtl.tasks import Task

#: Hub task type of each built-in task kind (the ``model-index`` needs one per result).
HUB_TASK_TYPES = {
    "single_sentence_classification": "text-classification",
    "sentence_pair_classification": "text-classification",
    "regression": "text-classification",
    "token_classification": "token-classification",
    "seq2seq": "text2text-generation",
}


def task_metrics(metrics: Mapping[str, Any], tasks: Sequence[Task], prefix: str = "eval") -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` from Trainer metrics named ``{prefix}_{task}_{metric}`` (the longest task name
    that prefixes a key wins, so tasks ``a`` and ``a_b`` do not mix)."""
    names = sorted((t.name for t in tasks), key=len, reverse=True)
    out: dict[str, dict[str, float]] = {t.name: {} for t in tasks}
    for key, value in metrics.items():
        if not key.startswith(f"{prefix}_") or not isinstance(value, (int, float)):
            continue
        rest = key[len(prefix) + 1:]
        task = next((n for n in names if rest.startswith(f"{n}_")), None)
        if task is not None:
            out[task][rest[len(task) + 1:]] = float(value)
    return out


def build_model_card(
    tasks: Sequence[Task],
    combiner: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    model_name: str = "hf_mtl multi-task model",
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
    language: str | list[str] | None = None,
    license: str | None = None,
    adapter: Mapping[str, Any] | None = None,
) -> ModelCard:
    """The card of a multi-task model; ``metrics`` are Trainer metrics (``eval_<task>_<metric>``); ``adapter`` is
    the encoder adapter's peft config (``MultiTaskConfig.encoder_adapter``), if any."""
    per_task = task_metrics(metrics or {}, tasks)
    results = [
        EvalResult(task_type=HUB_TASK_TYPES.get(task.kind_name, "other"), task_name=task.name, dataset_type=task.name,
                   dataset_name=task.name, dataset_split="validation", metric_type=metric, metric_name=metric,
                   metric_value=value)
        for task in tasks for metric, value in per_task[task.name].items()
    ]
    kinds = sorted({HUB_TASK_TYPES.get(t.kind_name, t.kind_name) for t in tasks})
    data = ModelCardData(
        library_name="transformers", model_name=model_name, base_model=base_model,
        datasets=list(datasets) if datasets else None, language=language, license=license,
        tags=["hf_mtl", "multi-task", *kinds, *(["peft", str(adapter.get("peft_type", "")).lower()] if adapter else []),
              *(tags or [])], eval_results=results or None,
    )
    lines = [f"# {model_name}", "",
             "A shared encoder with one head per task, trained with `hf_mtl` "
             "(multi-task learning for HuggingFace Transformers)" + (f" from `{base_model}`" if base_model else "") + ".", "",
             "## Tasks", "", "| task | kind | role | weight | labels |", "| --- | --- | --- | --- | --- |"]
    for task in tasks:
        labels = ", ".join(task.label_names) if task.label_names else ("–" if task.num_labels in (None, 1)
                                                                         else f"{task.num_labels} classes")
        lines.append(f"| {task.name} | {task.kind_name} | {task.role.value} | {task.weight:g} | {labels} |")
    lines += ["", f"Combiner: `{combiner}`." if combiner else "Combiner: not recorded.", ""]
    if adapter:
        targets = ", ".join(adapter.get("target_modules") or []) or "peft's default modules"
        lines += [f"Encoder adapter: {adapter.get('peft_type')} (r = {adapter.get('r')}, alpha = {adapter.get('lora_alpha')}, "
                  f"on {targets}) in `encoder/`, in peft's format, on the frozen base encoder "
                  f"`{adapter.get('base_model_name_or_path')}`; `model.safetensors` holds the heads. A peft user loads "
                  "the encoder alone with `PeftModel.from_pretrained(AutoModel.from_pretrained(BASE), "
                  'THIS_DIRECTORY_OR_REPO, subfolder="encoder")`.', ""]
    lines += ["## Evaluation", ""]
    if results:
        lines += ["| task | metric | value |", "| --- | --- | --- |"]
        lines += [f"| {task} | {metric} | {value:.4f} |" for task, values in per_task.items()
                  for metric, value in values.items()]
    else:
        lines.append("No evaluation was recorded.")
    lines += ["", "## Use", "", "```python", "from hf_mtl import MultiTaskModel   # pip install hf_mtl", "",
              'model = MultiTaskModel.from_pretrained("THIS_DIRECTORY_OR_REPO")',
              'print(model.predict(["A sentence to classify."]))   # {task: [{"label": ..., "score": ...}]}', "```", "",
              "Without importing hf_mtl: `AutoModel.from_pretrained(..., trust_remote_code=True)` (the directory's "
              "`hf_mtl_auto.py` only imports the installed package).", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def hub_base_model(name_or_path: str | None) -> str | None:
    """``name_or_path`` if it names a Hub repository (``org/name`` or ``name``), ``None`` for a local folder."""
    if not name_or_path or os.path.isabs(name_or_path) or os.path.exists(name_or_path):
        return None
    return name_or_path
