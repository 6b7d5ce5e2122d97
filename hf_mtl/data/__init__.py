"""Task data: sources (embedded corpora, GLUE, user files) and mixtures (sampling, collation)."""

from hf_mtl.data.mixture import (
    MultiTaskBatchSampler,
    MultiTaskCollator,
    SharedInputCollator,
    TaskMixture,
    batch_quotas,
    sampling_rates,
    tokenize_shared_dataset,
    tokenize_task_dataset,
)
from hf_mtl.data.prepare import PreparedData, prepare_datasets

__all__ = [
    "MultiTaskBatchSampler",
    "MultiTaskCollator",
    "PreparedData",
    "SharedInputCollator",
    "TaskMixture",
    "batch_quotas",
    "prepare_datasets",
    "sampling_rates",
    "tokenize_shared_dataset",
    "tokenize_task_dataset",
]
