"""The training step: batch → per-task losses → per-task gradients → Gram → combiner → weights → one update.

One contract (:class:`StepStrategy`: ``micro_batch`` per micro-batch, ``end_step`` once per optimizer step) with
one implementation per way of producing the update, each in its own module:

* :mod:`~hf_mtl.steps.loss_weighted` — loss-based combiners: one backward of ``Σ_k w_k L_k``;
* :mod:`~hf_mtl.steps.params` — exact per-task gradients of the shared parameters;
* :mod:`~hf_mtl.steps.encoder_output` — the Gram of the gradients with respect to the encoder output;
* :mod:`~hf_mtl.steps.masking` — gradient-guided loss masking for noisy data.

:class:`StepContext` owns what they share; every step yields a :class:`StepRecord`. See docs/architecture.md.
"""

from hf_mtl.steps.base import (
    StepStrategy,
    available_step_strategies,
    get_step_strategy,
    register_step_strategy,
    solve_weights,
)
from hf_mtl.steps.context import NONFINITE_POLICIES, StepContext
from hf_mtl.steps.encoder_output import EncoderOutputStep
from hf_mtl.steps.loss_weighted import LossWeightedStep
from hf_mtl.steps.masking import MaskingStep
from hf_mtl.steps.params import ParamsStep
from hf_mtl.steps.record import StepRecord

__all__ = [
    "NONFINITE_POLICIES",
    "EncoderOutputStep",
    "LossWeightedStep",
    "MaskingStep",
    "ParamsStep",
    "StepContext",
    "StepRecord",
    "StepStrategy",
    "available_step_strategies",
    "get_step_strategy",
    "register_step_strategy",
    "solve_weights",
]
