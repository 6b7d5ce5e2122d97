"""``MultiTaskTrainingArguments``: ``TrainingArguments`` plus the combiner, gradient mode and task sampling."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from hf_mtl.data.mixture import SAMPLING_STRATEGIES
from hf_mtl.gradients import BUFFER_DTYPES
from hf_mtl.masking.arguments import LossMaskingArguments
from hf_mtl.run_safety import RunSafetyArguments
from hf_mtl.steps.context import NONFINITE_POLICIES

GRADIENT_MODES = ("params", "encoder_output")


@dataclass
class MultiTaskTrainingArguments(RunSafetyArguments, LossMaskingArguments, TrainingArguments):
    """Arguments of :class:`~hf_mtl.MultiTaskTrainer` (all of ``TrainingArguments`` plus the fields below).

    ``per_device_train_batch_size`` is the size of the whole multi-task batch; it is split into per-task
    sub-batches by the sampling rates, every task getting at least one example.
    """

    combiner: str = field(
        default="linear",
        metadata={"help": "Combiner name (see `hf_mtl.combiners.available_combiners()`), e.g. linear, mgda, "
                          "primary_auxiliary, pcgrad, uncertainty."},
    )
    combiner_options: dict | str | None = field(
        default=None,
        metadata={"help": 'Keyword options of the combiner, as a dict or a JSON string, e.g. \'{"tol": 1e-6}\'.'},
    )
    gradient_mode: str = field(
        default="params",
        metadata={"help": "Per-task gradients for gradient combiners: of the shared parameters (`params`, exact) "
                          "or of the encoder output (`encoder_output`: one backward, a bound)."},
    )
    sampling_strategy: str = field(
        default="proportional",
        metadata={"help": f"Task mixing rates: one of {SAMPLING_STRATEGIES}."},
    )
    sampling_temperature: float = field(
        default=2.0, metadata={"help": "T in p_k ∝ n_k^(1/T) when sampling_strategy=temperature."}
    )
    max_examples_per_task: int | None = field(
        default=None, metadata={"help": "Cap n_k at this many examples when computing mixing rates (T5's K)."}
    )
    tuning_free_l2: bool = field(
        default=False,
        metadata={"help": "Treat weight decay as an auxiliary task: g + relu(-<g,θ>)/||θ||²·θ (needs no coefficient)."},
    )
    nonfinite_policy: str = field(
        default="skip_step",
        metadata={"help": f"What to do with a NaN/inf task loss or gradient: one of {NONFINITE_POLICIES}."},
    )
    shard_task_gradients: bool | None = field(
        default=None,
        metadata={"help": "params mode under DDP: reduce-scatter (True) or all-reduce (False) the per-task "
                          "gradients; unset: True with NCCL only."},
    )
    task_gradient_dtype: str = field(
        default="float32",
        metadata={"help": "params mode: the per-task gradients' storage; bfloat16 halves its memory (Gram and update "
                          "stay float32).", "choices": list(BUFFER_DTYPES)},
    )
    record_task_gradients: bool = field(
        default=False,
        metadata={"help": "Keep each step's per-task gradient rows (K×P, params mode) in `trainer.last_step`."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.combiner_options, str):
            text = self.combiner_options.strip()
            try:
                self.combiner_options = json.loads(text) if text else {}
            except json.JSONDecodeError as err:
                raise ValueError(f"combiner_options is not valid JSON ({err}): {self.combiner_options!r}") from None
        if self.combiner_options is None:
            self.combiner_options = {}
        if not isinstance(self.combiner_options, dict):
            raise ValueError(f"combiner_options must be a JSON object, got {self.combiner_options!r}.")
        if self.gradient_mode not in GRADIENT_MODES:
            raise ValueError(f"gradient_mode must be one of {GRADIENT_MODES}, got {self.gradient_mode!r}.")
        if self.sampling_strategy not in SAMPLING_STRATEGIES:
            raise ValueError(
                f"sampling_strategy must be one of {SAMPLING_STRATEGIES}, got {self.sampling_strategy!r}."
            )
        if self.nonfinite_policy not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite_policy must be one of {NONFINITE_POLICIES}, got {self.nonfinite_policy!r}.")
        if self.task_gradient_dtype not in BUFFER_DTYPES:
            raise ValueError(f"task_gradient_dtype must be one of {BUFFER_DTYPES}, got {self.task_gradient_dtype!r}.")
        from hf_mtl.combiners import available_combiners

        if self.combiner not in available_combiners():
            raise ValueError(
                f"Unknown combiner {self.combiner!r}; available combiners: {', '.join(available_combiners())}."
            )

    def combiner_kwargs(self) -> dict[str, Any]:
        return dict(self.combiner_options or {})
