"""Task mixtures: tokenised per-task datasets, a batch sampler that puts every task in every batch, and
the collators that turn examples into the ``task → sub-batch`` mapping :class:`MultiTaskModel` expects.

Sampling rates follow the strategies of T5 (examples-proportional with a cap, temperature-scaled;
Raffel et al. 2020, §3.5.2), jiant and MT-DNN: ``p_k ∝ min(n_k, cap)^(1/T)`` (``T = 1`` proportional,
``T → ∞`` uniform). When gradients are combined every optimizer step must see every task, so each batch
is split into per-task quotas ``≈ B·p_k`` (largest remainder, at least one example per task) instead of
drawing whole single-task batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from hf_mtl.heads import TaskHead
from hf_mtl.heads.classification import SequenceClassificationHead
from hf_mtl.heads.regression import RegressionHead
from hf_mtl.heads.token_classification import TokenClassificationHead
from hf_mtl.tasks import Task

SAMPLING_STRATEGIES = ("proportional", "temperature", "uniform")
TASK_COLUMN = "__task__"
MODEL_INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def sampling_rates(
    sizes: Sequence[int],
    strategy: str = "proportional",
    temperature: float = 1.0,
    max_examples_per_task: int | None = None,
) -> np.ndarray:
    """Mixing rates ``p_k ∝ min(n_k, cap)^(1/T)`` for the given strategy."""
    if strategy not in SAMPLING_STRATEGIES:
        raise ValueError(f"Unknown sampling strategy {strategy!r}; expected one of {SAMPLING_STRATEGIES}.")
    sizes_arr = np.asarray(sizes, dtype=np.float64)
    if (sizes_arr <= 0).any():
        raise ValueError(f"Every task needs at least one example; sizes are {list(sizes)}.")
    if max_examples_per_task is not None:
        if max_examples_per_task < 1:
            raise ValueError(f"max_examples_per_task must be >= 1, got {max_examples_per_task}.")
        sizes_arr = np.minimum(sizes_arr, max_examples_per_task)
    if strategy == "uniform":
        return np.full(len(sizes_arr), 1.0 / len(sizes_arr))
    if strategy == "temperature":
        if temperature <= 0:
            raise ValueError(f"sampling temperature must be > 0, got {temperature}.")
        weights = sizes_arr ** (1.0 / temperature)
    else:
        weights = sizes_arr
    return weights / weights.sum()


def batch_quotas(rates: Sequence[float], batch_size: int) -> list[int]:
    """Split ``batch_size`` into per-task counts as close to ``batch_size·p_k`` as integers allow, each ≥ 1.

    Start from ``max(1, floor(B·p_k))``; hand the remaining slots to the largest shortfalls and, if the
    floor of one example pushed the total over ``B``, take slots back from the largest surpluses.
    """
    num_tasks = len(rates)
    if batch_size < num_tasks:
        raise ValueError(
            f"Batch size {batch_size} is smaller than the number of tasks ({num_tasks}); every batch must hold "
            "at least one example of each task. Raise per_device_train_batch_size."
        )
    target = np.asarray(rates, dtype=np.float64) * batch_size
    quotas = np.maximum(1, np.floor(target)).astype(int)
    while quotas.sum() < batch_size:
        quotas[int(np.argmax(target - quotas))] += 1
    while quotas.sum() > batch_size:
        surplus = np.where(quotas > 1, quotas - target, -np.inf)
        quotas[int(np.argmax(surplus))] -= 1
    return quotas.tolist()


class MultiTaskBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields batches of indices into a concatenation of task datasets, every batch holding every task.

    Task ``k`` occupies indices ``[offsets[k], offsets[k] + sizes[k])``. Each task walks through its own
    seeded permutation, reshuffled when exhausted, so small tasks repeat within an epoch while large ones
    are only partly seen. An epoch has ``ceil(Σ_k min(n_k, cap) / batch_size)`` batches. The order depends
    only on ``(seed, epoch)``; ``set_epoch`` is called by the Trainer, so runs resume exactly.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        strategy: str = "proportional",
        temperature: float = 1.0,
        max_examples_per_task: int | None = None,
        seed: int = 42,
    ) -> None:
        self.sizes = [int(n) for n in sizes]
        self.rates = sampling_rates(self.sizes, strategy, temperature, max_examples_per_task)
        self.quotas = batch_quotas(self.rates, batch_size)
        self.batch_size = batch_size
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int).tolist()
        capped = (
            self.sizes
            if max_examples_per_task is None
            else [min(n, max_examples_per_task) for n in self.sizes]
        )
        self.num_batches = max(1, math.ceil(sum(capped) / batch_size))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        generator = np.random.default_rng([self.seed, self.epoch])
        streams = [_shuffled_stream(n, generator) for n in self.sizes]
        for _ in range(self.num_batches):
            batch: list[int] = []
            for stream, quota, offset in zip(streams, self.quotas, self.offsets, strict=True):
                batch.extend(offset + next(stream) for _ in range(quota))
            yield batch


def _shuffled_stream(size: int, generator: np.random.Generator) -> Iterator[int]:
    while True:
        yield from generator.permutation(size).tolist()


def tokenize_task_dataset(
    task: Task,
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 128,
    label_column: str = "label",
) -> datasets.Dataset:
    """Inputs + ``labels`` of the task's head (``TaskHead.tokenize``): ``text`` (+ ``text_pair`` when the
    head reads one, e.g. STS-B regression) and the label column (a seq2seq target is tokenised too)."""
    if len(dataset) == 0:
        raise ValueError(f"Task {task.name!r} has no examples.")
    head = task.head_class()
    for column in (*head.text_columns(task), label_column):
        if column not in dataset.column_names:
            raise ValueError(
                f"Task {task.name!r}: column {column!r} is missing; the dataset has columns {dataset.column_names}."
            )
    return dataset.map(
        lambda rows: head.tokenize(task, rows, tokenizer, max_length, label_column),
        batched=True,
        remove_columns=dataset.column_names,
        desc=f"Tokenising {task.name}",
    )


def tokenize_shared_dataset(
    tasks: Sequence[Task],
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 128,
) -> datasets.Dataset:
    """Tokenise a shared-input dataset whose labels sit in ``label_<task>`` columns (each encoded by its
    task's head, e.g. a seq2seq target into token ids)."""
    if len(dataset) == 0:
        raise ValueError(f"Shared-input dataset for tasks {[t.name for t in tasks]} has no examples.")
    needed = ["text"] + [f"label_{t.name}" for t in tasks]
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"Shared-input dataset is missing column(s) {missing}; it has {dataset.column_names}."
        )
    pair = "text_pair" in dataset.column_names

    def encode(rows: dict[str, list[Any]]) -> dict[str, Any]:
        encoded = dict(
            tokenizer(rows["text"], rows["text_pair"] if pair else None, truncation=True, max_length=max_length)
        )
        for task in tasks:
            column = f"label_{task.name}"
            encoded[column] = task.head_class().encode_labels(task, rows[column], tokenizer, max_length)
        return encoded

    drop = ["text"] + (["text_pair"] if pair else [])
    return dataset.map(encode, batched=True, remove_columns=drop, desc="Tokenising shared inputs")


def pad_model_inputs(
    tokenizer: PreTrainedTokenizerBase | None, features: Sequence[Mapping[str, Any]],
    pad_to_multiple_of: int | None = None, where: str = "Batch",
) -> dict[str, torch.Tensor]:
    """The model inputs of ``features`` as tensors: padded by ``tokenizer``, or stacked as they are when there is
    no tokenizer (pre-tokenised data already padded to one length)."""
    inputs = [{k: f[k] for k in MODEL_INPUT_COLUMNS if k in f} for f in features]
    if tokenizer is not None:
        return dict(tokenizer.pad(inputs, padding=True, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt"))
    lengths = sorted({len(values) for x in inputs for values in x.values()})
    if len(lengths) > 1:
        raise ValueError(
            f"{where}: examples have different lengths {lengths[:6]} and there is no tokenizer to pad them. Pass "
            "the tokenizer as `processing_class`, or pad the data to one length (tokenizer(..., padding='max_length'))."
        )
    return {key: torch.tensor([x[key] for x in inputs]) for key in inputs[0]}


class TaskMixture(torch.utils.data.Dataset):
    """Concatenation of tokenised per-task datasets (disjoint layout); item = example + its task name."""

    def __init__(self, task_datasets: Mapping[str, datasets.Dataset]) -> None:
        if not task_datasets:
            raise ValueError("A task mixture needs at least one task.")
        for name, dataset in task_datasets.items():
            if len(dataset) == 0:
                raise ValueError(f"Task {name!r} has no examples.")
        self.task_names = list(task_datasets)
        self.datasets = [task_datasets[n] for n in self.task_names]
        self.sizes = [len(d) for d in self.datasets]
        self._ends = np.cumsum(self.sizes)

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        k = int(np.searchsorted(self._ends, index, side="right"))
        start = 0 if k == 0 else int(self._ends[k - 1])
        item = dict(self.datasets[k][int(index) - start])
        item[TASK_COLUMN] = self.task_names[k]
        return item


def _label_collator(labels: Sequence[Any], regression: bool) -> type[TaskHead]:
    """The head that collates labels of a task known by name only: regression if listed as such, per-token
    if the labels are sequences (padded with ``-100`` to at least the input width), else one class each."""
    if regression:
        return RegressionHead
    return TokenClassificationHead if isinstance(labels[0], list) else SequenceClassificationHead


@dataclass
class MultiTaskCollator:
    """Disjoint layout: groups examples by task and pads each sub-batch on its own.

    Returns ``{"task_batches": {task: {"input_ids", "attention_mask", ..., "labels"}}}`` with tasks in
    ``task_order``. Each sub-batch's labels are collated by its task's head (``TaskHead.collate_labels``)
    when ``task_order`` holds :class:`Task` objects; for a task given by name, ``regression_tasks`` and
    the labels' shape tell how.
    """

    tokenizer: PreTrainedTokenizerBase | None
    task_order: Sequence[str | Task]
    regression_tasks: frozenset[str] = frozenset()
    pad_to_multiple_of: int | None = None
    tasks: dict[str, Task] = field(init=False)

    def __post_init__(self) -> None:
        self.tasks = {t.name: t for t in self.task_order if isinstance(t, Task)}
        self.task_order = [t.name if isinstance(t, Task) else t for t in self.task_order]

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for feature in features:
            groups.setdefault(feature[TASK_COLUMN], []).append(feature)
        unknown = set(groups) - set(self.task_order)
        if unknown:
            raise ValueError(
                f"Examples of unknown task(s) {sorted(unknown)}; known tasks are {list(self.task_order)}."
            )
        return {"task_batches": {name: self._pad(groups[name], name) for name in self.task_order if name in groups}}

    def _pad(self, features: list[dict[str, Any]], name: str) -> dict[str, torch.Tensor]:
        batch = pad_model_inputs(self.tokenizer, features, self.pad_to_multiple_of, f"Task {name!r}")
        if "labels" not in features[0]:  # unlabelled data (prediction)
            return batch
        labels = [f["labels"] for f in features]
        task = self.tasks.get(name)
        head = task.head_class() if task is not None else _label_collator(labels, name in self.regression_tasks)
        batch["labels"] = head.collate_labels(task, labels, batch["input_ids"].shape[1])
        return batch


@dataclass
class SharedInputCollator:
    """Shared-input layout: one padded input batch and one label tensor per task.

    Returns ``{"inputs": {"input_ids", ...}, "labels": {task: labels}}`` (tasks without a ``label_<task>``
    column are left out of ``labels``).
    """

    tokenizer: PreTrainedTokenizerBase | None
    tasks: Sequence[Task]
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = pad_model_inputs(self.tokenizer, features, self.pad_to_multiple_of, "Shared-input batch")
        width = batch["input_ids"].shape[1]
        labels = {  # a task without a label column is predicted, not scored
            task.name: task.head_class().collate_labels(task, [f[f"label_{task.name}"] for f in features], width)
            for task in self.tasks if f"label_{task.name}" in features[0]
        }
        return {"inputs": batch, "labels": labels}


def single_task_collator(
    tokenizer: PreTrainedTokenizerBase | None, task: Task, pad_to_multiple_of: int | None = None
) -> MultiTaskCollator:
    """Collator for evaluating one task: a disjoint batch with a single sub-batch."""
    return _SingleTaskCollator(tokenizer=tokenizer, task_order=[task], pad_to_multiple_of=pad_to_multiple_of)


@dataclass
class _SingleTaskCollator(MultiTaskCollator):
    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        (name,) = self.task_order
        return {"task_batches": {name: self._pad(features, name)}}
