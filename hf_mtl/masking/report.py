"""How often known-corrupted and intact examples were masked: an observer for experiments with injected noise.

An example is recognised by its content (input token ids without padding, plus its label or target tokens),
so the tally works with any collator and sampler, on every rank.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist

from hf_mtl.masking.masker import MaskRecord

IGNORE_INDEX = -100


def _rows(ids: torch.Tensor, mask: torch.Tensor | None) -> list[tuple[int, ...]]:
    ids = ids.detach().cpu()
    mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.detach().cpu().bool()
    return [tuple(row[keep].tolist()) for row, keep in zip(ids, mask, strict=True)]


def _labels(labels: torch.Tensor) -> list[Hashable]:
    labels = labels.detach().cpu()
    if labels.dim() == 1:
        return [round(float(v), 6) if labels.is_floating_point() else int(v) for v in labels]
    return [tuple(row[row != IGNORE_INDEX].tolist()) for row in labels]


def _plain_keys(batch: Mapping[str, Any], labels: torch.Tensor | None) -> list[Hashable]:
    inputs = _rows(batch["input_ids"], batch.get("attention_mask"))
    if labels is None:
        return list(inputs)
    return list(zip(inputs, _labels(labels), strict=True))


def example_keys(batch: Mapping[str, Any]) -> list[Hashable]:
    """One key per example of ``batch``, in the order per-example losses use.

    Layouts: ``MultiTaskModel`` disjoint (``task_batches``, tasks in batch order) and shared-input
    (``inputs`` + ``labels``), or a flat batch with ``input_ids`` (+ ``labels``).
    """
    if "task_batches" in batch:
        keys: list[Hashable] = []
        for sub_batch in batch["task_batches"].values():
            keys.extend(_plain_keys(sub_batch, sub_batch.get("labels")))
        return keys
    if "inputs" in batch:
        return _plain_keys(batch["inputs"], None)
    return _plain_keys(batch, batch.get("labels"))


def dataset_keys(rows: Iterable[Mapping[str, Any]]) -> list[Hashable]:
    """Keys of tokenised examples (``input_ids``, optional ``labels``), as :func:`example_keys` makes them."""
    keys: list[Hashable] = []
    for row in rows:
        ids = tuple(int(i) for i in row["input_ids"])
        label = row.get("labels")
        if label is None:
            keys.append(ids)
        elif isinstance(label, (list, tuple)):
            keys.append((ids, tuple(int(t) for t in label if t != IGNORE_INDEX)))
        else:
            keys.append((ids, round(float(label), 6) if isinstance(label, float) else int(label)))
    return keys


INTACT = "intact"


class MaskingTally:
    """Observer counting masking decisions per kind of example (``"intact"`` or a kind of corruption).

    Args:
        kinds: ``{example key: kind}`` (keys from :func:`dataset_keys`; kind ``"intact"`` for untouched
            examples). Keys that occur with two kinds are ambiguous and counted as unknown.
    """

    def __init__(self, kinds: Mapping[Hashable, str]) -> None:
        self.kinds = dict(kinds)
        self.names = sorted(set(self.kinds.values()) | {INTACT}) + ["unknown"]
        # per kind: decisions, masked decisions
        self.counts = torch.zeros(len(self.names), 2, dtype=torch.float64)

    @classmethod
    def from_dataset(cls, rows: Iterable[Mapping[str, Any]], kinds: Iterable[str]) -> MaskingTally:
        seen: dict[Hashable, str | None] = {}
        for key, kind in zip(dataset_keys(rows), kinds, strict=True):
            seen[key] = kind if key not in seen or seen[key] == kind else None
        return cls({k: v for k, v in seen.items() if v is not None})

    def __call__(self, batch: Mapping[str, Any], record: MaskRecord) -> None:
        keys = example_keys(batch)
        if len(keys) != record.keep.numel():
            raise ValueError(f"MaskingTally: the batch has {len(keys)} examples but the mask {record.keep.numel()}.")
        for key, keep in zip(keys, record.keep.tolist(), strict=True):
            row = self.names.index(self.kinds.get(key, "unknown"))
            self.counts[row, 0] += 1
            self.counts[row, 1] += 0 if keep else 1

    def all_reduce(self) -> None:
        """Sum the counts over ranks (no-op outside distributed runs); call once, after training."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            counts = self.counts.to(device)
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
            self.counts = counts.cpu()

    def report(self) -> dict[str, float | int | None]:
        """``masked_rate_corrupted`` (every kind but intact), ``masked_rate_intact``, per-kind rates and counts."""
        def rate(rows: list[int]) -> float | None:
            decisions = float(self.counts[rows, 0].sum())
            return float(self.counts[rows, 1].sum()) / decisions if decisions else None

        corrupted = [i for i, n in enumerate(self.names) if n not in (INTACT, "unknown")]
        out: dict[str, float | int | None] = {
            "masked_rate_corrupted": rate(corrupted),
            "masked_rate_intact": rate([self.names.index(INTACT)]),
        }
        for i, name in enumerate(self.names):
            if name not in (INTACT, "unknown"):
                out[f"masked_rate_{name}"] = rate([i])
        for i, name in enumerate(self.names):
            out[f"decisions_{name}"] = int(self.counts[i, 0])
        return out
