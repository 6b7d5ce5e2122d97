"""Training arguments of gradient-guided loss masking (mixed into ``MultiTaskTrainingArguments`` too)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from transformers import TrainingArguments

from hf_mtl.masking.rules import check_keep_fraction
from hf_mtl.run_safety import RunSafetyArguments

LOSS_MASKING_MODES = ("none", "example", "batch")


@dataclass
class LossMaskingArguments:
    """Fields of the loss-masking mode; a dataclass mixin for ``TrainingArguments`` subclasses."""

    loss_masking: str = field(
        default="none",
        metadata={"help": "Noisy-data training with a clean set: `none`; `example` (drop noisy examples whose "
                          "gradient points against the clean gradient, found by one JVP); `batch` (primary/"
                          "auxiliary: noisy loss main, clean loss must not rise)."},
    )
    masking_refresh_steps: int = field(
        default=1, metadata={"help": "Recompute the clean gradient g_clean every this many optimizer steps."}
    )
    masking_threshold: float = field(
        default=0.0,
        metadata={"help": "Example mode: keep an example iff <∇ℓ_b, g_clean/||g_clean||> ≥ this value."},
    )
    masking_keep_fraction: float | None = field(
        default=None,
        metadata={"help": "Example mode: keep this fraction of each micro-batch (best aligned) instead of the "
                          "threshold rule."},
    )
    masking_train_on_clean: bool = field(
        default=False,
        metadata={"help": "Also train on the clean batch (its gradient is added to every update)."},
    )
    masking_balance_labels: bool = field(
        default=False,
        metadata={"help": "Example mode, classification: compare against Σ_c g_c/||g_c|| (each class's clean "
                          "gradient at unit length) instead of g_clean; see docs/masking.md."},
    )
    masking_clean_batch_size: int | None = field(
        default=None,
        metadata={"help": "Clean examples per device for g_clean (default: per_device_train_batch_size)."},
    )
    masking_parameters: str | None = field(
        default=None,
        metadata={"help": "Regular expression over parameter names: g_clean and the alignments use only the "
                          "matching parameters (default: every trainable parameter). Restricting them to the "
                          "top layers makes the JVP cheaper; the update still moves every parameter."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate_loss_masking()

    def validate_loss_masking(self) -> None:
        if self.loss_masking not in LOSS_MASKING_MODES:
            raise ValueError(f"loss_masking must be one of {LOSS_MASKING_MODES}, got {self.loss_masking!r}.")
        if int(self.masking_refresh_steps) < 1:
            raise ValueError(f"masking_refresh_steps must be ≥ 1, got {self.masking_refresh_steps}.")
        if not math.isfinite(float(self.masking_threshold)):
            raise ValueError(f"masking_threshold must be finite, got {self.masking_threshold}.")
        if self.masking_keep_fraction is not None:
            check_keep_fraction(self.masking_keep_fraction)
            if self.masking_threshold != 0.0:
                raise ValueError(
                    "Give either masking_threshold or masking_keep_fraction, not both "
                    f"(got threshold={self.masking_threshold}, keep_fraction={self.masking_keep_fraction})."
                )
        if self.masking_train_on_clean and int(self.masking_refresh_steps) != 1:
            raise ValueError(
                "masking_train_on_clean trains on a clean batch at every step, so g_clean is fresh at every step: "
                f"masking_refresh_steps must be 1, got {self.masking_refresh_steps}."
            )
        if self.masking_balance_labels and self.loss_masking == "batch":
            raise ValueError("masking_balance_labels applies to loss_masking='example'; batch mode constrains the "
                             "clean loss itself.")
        if self.masking_clean_batch_size is not None and int(self.masking_clean_batch_size) < 1:
            raise ValueError(f"masking_clean_batch_size must be ≥ 1, got {self.masking_clean_batch_size}.")
        if self.masking_parameters is not None:
            try:
                re.compile(self.masking_parameters)
            except re.error as err:
                raise ValueError(f"masking_parameters is not a regular expression ({err}): "
                                 f"{self.masking_parameters!r}") from None


@dataclass
class LossMaskingTrainingArguments(RunSafetyArguments, LossMaskingArguments, TrainingArguments):
    """``TrainingArguments`` plus the loss-masking fields, for :class:`~hf_mtl.masking.LossMaskingTrainer`."""
