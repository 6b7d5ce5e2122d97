"""Parameter-efficient adapters (LoRA, through ``peft``) on the shared encoder of a :class:`~hf_mtl.MultiTaskModel`.

LoRA (Hu et al. 2021, arXiv 2106.09685) freezes the encoder's weights ``W`` and trains a low-rank update
``(α/r)·B A`` next to the chosen linear layers; the heads stay fully trainable. The shared parameters are then the
adapter's ``A``/``B`` matrices only, so every per-task gradient, the Gram, the all-reduce and the update cover
those (``MultiTaskModel.shared_parameters`` keeps parameters that require gradients) and the frozen weights never
get a ``.grad``. A saved model keeps ``peft``'s adapter format in the ``encoder/`` subfolder (``adapter_config.json``
+ ``adapter_model.safetensors``), which ``peft.PeftModel.from_pretrained(base_encoder, dir, subfolder="encoder")``
loads on the base encoder; the heads and the multi-task configuration sit next to it (docs/adapters.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel

#: The subfolder of a saved model directory holding the encoder's adapter in ``peft``'s format.
ADAPTER_SUBFOLDER = "encoder"


def require_peft() -> None:
    """Raise a clear error when ``peft`` is not installed."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ImportError("Adapters on the shared encoder need peft: pip install 'hf_mtl[peft]'.") from None


def adapter_config_dict(peft_config: PeftConfig | Mapping[str, Any], base_model_name_or_path: str | None) -> dict:
    """The JSON-ready dict of ``peft_config`` (sets become sorted lists) with the base encoder's name or path.

    Prompt-learning configs (prompt/prefix tuning) add virtual tokens to the input, which the heads' masks and
    pooling do not know about; they are refused.
    """
    require_peft()
    from peft import PeftConfig, get_peft_config

    config = peft_config if isinstance(peft_config, PeftConfig) else get_peft_config(dict(peft_config))
    if config.is_prompt_learning:
        raise ValueError(f"peft config {type(config).__name__} adds virtual tokens to the encoder input; only "
                         "adapters that keep the sequence (e.g. LoraConfig) fit the task heads.")
    values = config.to_dict()
    values["base_model_name_or_path"] = base_model_name_or_path or values.get("base_model_name_or_path")
    return json.loads(json.dumps(values, default=lambda value: sorted(value) if isinstance(value, set) else
                                 _not_serializable(value)))


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"peft config value {value!r} ({type(value).__name__}) cannot be saved in config.json.")


def wrap_encoder(encoder: nn.Module, adapter: Mapping[str, Any]) -> PeftModel:
    """``encoder`` with the adapter described by ``adapter`` (a dict from :func:`adapter_config_dict`) injected:
    its own weights frozen, the adapter's trainable."""
    require_peft()
    from peft import get_peft_config, get_peft_model

    config = get_peft_config(dict(adapter))
    # get_peft_model records the wrapped model's name_or_path as the adapter's base: keep the configured one.
    encoder.name_or_path = adapter.get("base_model_name_or_path") or ""
    return get_peft_model(encoder, config)


def adapter_state_dict(encoder: PeftModel) -> dict[str, torch.Tensor]:
    """The adapter's weights as ``peft`` saves them (keys without the adapter name)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(encoder)


def load_adapter_weights(encoder: PeftModel, directory: str | os.PathLike) -> None:
    """Copy the adapter weights saved in ``directory`` into ``encoder`` in place (parameters keep their identity,
    so an optimizer built on them stays valid); a missing or unexpected adapter tensor is an error."""
    from peft import load_peft_weights, set_peft_model_state_dict

    weights = load_peft_weights(str(directory), device="cpu")
    expected = set(adapter_state_dict(encoder))
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise ValueError(f"Adapter weights in {directory} do not match the model's adapter: missing {missing[:5]} "
                         f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)}).")
    set_peft_model_state_dict(encoder, weights)


@dataclass
class AdapterArguments:
    """Command-line options of the recipes that put a LoRA adapter on the shared encoder (off unless ``lora_r`` or
    ``peft_config_file`` is given)."""

    lora_r: int | None = field(
        default=None, metadata={"help": "LoRA rank on the frozen shared encoder."})
    lora_alpha: float | None = field(
        default=None, metadata={"help": "LoRA alpha; default 2·r."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch's input."})
    lora_target_modules: str | None = field(
        default=None, metadata={"help": "Encoder modules with LoRA, e.g. query,value (peft's default for BERT)."})
    peft_config_file: str | None = field(
        default=None, metadata={"help": "A peft config JSON (or its folder) instead of the --lora_* options."})
    save_merged_model: bool = field(
        default=False, metadata={"help": "Also save a merged copy in OUTPUT_DIR/merged."})

    def peft_config(self) -> PeftConfig | None:
        """The ``peft`` config these options describe, or ``None`` for no adapter."""
        lora_options = self.lora_alpha is not None or self.lora_target_modules is not None or self.lora_dropout
        if self.peft_config_file is not None:
            if self.lora_r is not None or lora_options:
                raise ValueError("Give either peft_config_file or the lora_* options, not both.")
            require_peft()
            path = self.peft_config_file
            file = os.path.join(path, "adapter_config.json") if os.path.isdir(path) else path
            with open(file, encoding="utf-8") as handle:
                return adapter_from_dict(json.load(handle), file)
        if self.lora_r is None:
            if lora_options or self.save_merged_model:
                raise ValueError("The lora_* options and save_merged_model need lora_r (the LoRA rank).")
            return None
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1, got {self.lora_r}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        require_peft()
        from peft import LoraConfig

        targets = None
        if self.lora_target_modules is not None:
            targets = [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]
            if not targets:
                raise ValueError(f"lora_target_modules names no module: {self.lora_target_modules!r}.")
        alpha = 2 * self.lora_r if self.lora_alpha is None else self.lora_alpha
        return LoraConfig(r=self.lora_r, lora_alpha=alpha, lora_dropout=self.lora_dropout, target_modules=targets)


def adapter_from_dict(values: Any, source: str) -> PeftConfig:
    """A ``peft`` config from its dict (``peft_type`` names the method), with the file named on error."""
    from peft import get_peft_config

    if not isinstance(values, Mapping):
        raise ValueError(f"{source}: a peft config is a JSON object, got {type(values).__name__}.")
    if "peft_type" not in values:
        raise ValueError(f"{source}: a peft config needs 'peft_type' (e.g. \"LORA\"); keys are {sorted(values)}.")
    try:
        return get_peft_config(dict(values))
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"{source}: not a valid peft config ({error}).") from None
