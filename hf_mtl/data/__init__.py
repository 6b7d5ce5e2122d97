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

__all__ = [
    "MultiTaskBatchSampler",
    "MultiTaskCollator",
    "SharedInputCollator",
    "TaskMixture",
    "batch_quotas",
    "sampling_rates",
    "tokenize_shared_dataset",
    "tokenize_task_dataset",
]
