"""Gradient-guided loss masking for training on a large noisy set with a small clean one.

Wang et al. 2021 (arXiv 2102.13549) and Su 2022, "Multi-task learning notes III: primary and auxiliary" (多任务学习漫谈（三）：分主次之序): at each step take ``g_clean``, the gradient
of the loss on a clean batch, and

* ``example`` granularity: drop from the loss every noisy example whose own gradient points against
  ``g_clean`` (``<∇ℓ_b, g_clean> < 0``); all B alignments come from one forward-mode JVP;
* ``batch`` granularity: primary/auxiliary — the noisy loss is the main task and the clean loss an
  auxiliary that must not rise, ``u = g + relu(-<g, g_clean>)/||g_clean||² · g_clean``.

See docs/masking.md.
"""

from hf_mtl.masking.alignment import example_alignments, losses_and_alignments
from hf_mtl.masking.arguments import LOSS_MASKING_MODES, LossMaskingArguments, LossMaskingTrainingArguments
from hf_mtl.masking.clean_data import CleanBatchStream, shuffled_index_batches
from hf_mtl.masking.masker import LossMasker, MaskingConfig, MaskRecord
from hf_mtl.masking.per_example import (
    ExampleLosses,
    PerExampleLoss,
    default_example_loss,
    multitask_example_losses,
    seq2seq_example_losses,
    sequence_classification_example_losses,
)
from hf_mtl.masking.report import MaskingTally, dataset_keys, example_keys
from hf_mtl.masking.rules import keep_fraction_mask, keep_mask, threshold_mask
from hf_mtl.masking.trainer import LossMaskingTrainer, build_loss_masker

__all__ = [
    "LOSS_MASKING_MODES",
    "CleanBatchStream",
    "ExampleLosses",
    "LossMasker",
    "LossMaskingArguments",
    "LossMaskingTrainer",
    "LossMaskingTrainingArguments",
    "MaskRecord",
    "MaskingConfig",
    "MaskingTally",
    "PerExampleLoss",
    "dataset_keys",
    "build_loss_masker",
    "default_example_loss",
    "example_alignments",
    "example_keys",
    "keep_fraction_mask",
    "keep_mask",
    "losses_and_alignments",
    "multitask_example_losses",
    "seq2seq_example_losses",
    "sequence_classification_example_losses",
    "shuffled_index_batches",
    "threshold_mask",
]
