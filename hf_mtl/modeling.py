"""A shared pretrained encoder with one head per task: ``MultiTaskConfig`` and ``MultiTaskModel``.

Data flow: batch → shared encoder → representation ``z`` (batch × tokens × hidden) → task head → per-task
loss. ``forward`` returns every task's loss and logits plus the representations, which the gradient
engine differentiates against in ``encoder_output`` mode (the MGDA upper bound of Sener & Koltun 2018,
arXiv 1810.04650). Heads are built by kind through the registry of :mod:`hf_mtl.heads`.

Hard sharing (default) uses one encoder for all tasks. Soft sharing gives each task its own copy of the
encoder and adds ``coef · Σ_{i<j} ||θ_i − θ_j||²`` to the loss (the L2 soft-sharing penalty of
Duong et al. 2015, ACL). Under hard sharing the encoder may carry a ``peft`` adapter (LoRA, Hu et al. 2021,
arXiv 2106.09685) with its own weights frozen (:mod:`hf_mtl.adapters`).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import ModelOutput

from hf_mtl.adapters import ADAPTER_SUBFOLDER, adapter_config_dict, load_adapter_weights, wrap_encoder
from hf_mtl.heads import TaskHead, head_class
from hf_mtl.heads.seq2seq import decoder_token_ids
from hf_mtl.tasks import Task, check_unique_names

ENCODER_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class MultiTaskConfig(PretrainedConfig):
    """Configuration of a :class:`MultiTaskModel`.

    Args:
        encoder_config: configuration of the shared ``AutoModel`` encoder (a config or its dict).
        tasks: the tasks (``Task`` objects or their dicts), one head each.
        sharing: ``"hard"`` (one encoder) or ``"soft"`` (one encoder copy per task + L2 penalty).
        soft_sharing_coef: coefficient of the soft-sharing penalty ``Σ_{i<j} ||θ_i − θ_j||²``.
        pooling: ``"mean"`` (masked mean over tokens) or ``"cls"`` (first token) for sentence-level heads.
        head_dropout: dropout before each head; ``None`` uses the encoder's ``hidden_dropout_prob``.
        decoder_token_ids: ``decoder_start_token_id``, ``eos_token_id`` and ``pad_token_id`` of seq2seq
            decoders (:meth:`MultiTaskModel.from_encoder` reads them from the tokenizer).
        seq2seq_max_new_tokens: most tokens a seq2seq head generates at evaluation.
        encoder_adapter: the ``peft`` config (as a dict, with ``base_model_name_or_path``) of an adapter on the
            shared encoder, whose own weights are then frozen (hard sharing only; :mod:`hf_mtl.adapters`).
    """

    model_type = "hf_mtl"

    def __init__(
        self,
        encoder_config: PretrainedConfig | dict[str, Any] | None = None,
        tasks: Sequence[Task | dict[str, Any]] | None = None,
        sharing: str = "hard",
        soft_sharing_coef: float = 1e-3,
        pooling: str = "mean",
        head_dropout: float | None = None,
        decoder_token_ids: dict[str, int] | None = None,
        seq2seq_max_new_tokens: int = 64,
        encoder_adapter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(encoder_config, dict):
            encoder_config = AutoConfig.for_model(**encoder_config)
        self.encoder_config = encoder_config
        self.tasks = [t.to_dict() if isinstance(t, Task) else dict(t) for t in (tasks or [])]
        task_objects = [Task.from_dict(t) for t in self.tasks]
        check_unique_names(task_objects)
        if sharing not in ("hard", "soft"):
            raise ValueError(f"sharing must be 'hard' or 'soft', got {sharing!r}.")
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}.")
        if soft_sharing_coef < 0:
            raise ValueError(f"soft_sharing_coef must be >= 0, got {soft_sharing_coef}.")
        self.sharing = sharing
        self.soft_sharing_coef = float(soft_sharing_coef)
        self.pooling = pooling
        self.head_dropout = head_dropout
        self.decoder_token_ids = dict(decoder_token_ids) if decoder_token_ids else None
        if seq2seq_max_new_tokens < 1:
            raise ValueError(f"seq2seq_max_new_tokens must be >= 1, got {seq2seq_max_new_tokens}.")
        self.seq2seq_max_new_tokens = int(seq2seq_max_new_tokens)
        if encoder_adapter is not None and sharing != "hard":
            raise ValueError("encoder_adapter (an adapter on the shared encoder) needs sharing='hard'; "
                             f"got sharing={sharing!r}.")
        self.encoder_adapter = dict(encoder_adapter) if encoder_adapter else None
        super().__init__(**kwargs)

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoConfig") -> None:
        """A no-op, as :meth:`MultiTaskModel.register_for_auto_class`."""

    @property
    def task_list(self) -> list[Task]:
        return [Task.from_dict(t) for t in self.tasks]

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        if isinstance(self.encoder_config, PretrainedConfig):
            output["encoder_config"] = self.encoder_config.to_dict()
        return output


@dataclass
class MultiTaskModelOutput(ModelOutput):
    """Output of :meth:`MultiTaskModel.forward`.

    Attributes:
        loss: ``Σ_k weight_k · L_k`` (+ the soft-sharing penalty), the loss a plain ``Trainer`` minimises.
        task_losses: ``{task: L_k}``, each the mean over that task's labelled examples (tokens).
        logits: ``{task: logits}``.
        representations: ``{group: z}`` — the shared encoder output each loss was computed from. In the
            disjoint layout the group is the task name; in the shared-input layout it is ``"shared"``.
        soft_sharing_penalty: the soft-sharing penalty (``None`` under hard sharing).
    """

    loss: torch.Tensor | None = None
    task_losses: dict[str, torch.Tensor] | None = None
    logits: dict[str, torch.Tensor] | None = None
    representations: dict[str, torch.Tensor] | None = None
    soft_sharing_penalty: torch.Tensor | None = None


SHARED_GROUP = "shared"

#: The module a saved model directory carries so that ``AutoModel.from_pretrained(dir, trust_remote_code=True)``
#: works in a process that never imported ``hf_mtl``: it only imports the installed package (Transformers'
#: ``auto_map`` convention for custom code, https://huggingface.co/docs/transformers/custom_models).
AUTO_MODULE = "hf_mtl_auto"
AUTO_MODULE_SOURCE = '''"""Loads a model trained with hf_mtl (pip install hf_mtl); written by MultiTaskModel.save_pretrained.

Without trust_remote_code, import hf_mtl's model first: `from hf_mtl import MultiTaskModel`.
"""

from hf_mtl.modeling import MultiTaskConfig, MultiTaskModel

__all__ = ["MultiTaskConfig", "MultiTaskModel"]
'''
AUTO_MAP = {"AutoConfig": f"{AUTO_MODULE}.MultiTaskConfig", "AutoModel": f"{AUTO_MODULE}.MultiTaskModel"}


class MultiTaskModel(PreTrainedModel):
    """One pretrained ``AutoModel`` encoder shared by several tasks, one :class:`~hf_mtl.heads.TaskHead` each.

    Two batch layouts are accepted by :meth:`forward`:

    * disjoint: ``task_batches={task: {"input_ids", "attention_mask", ..., "labels"}}``;
    * shared-input: ``inputs={"input_ids", "attention_mask", ...}`` and ``labels={task: labels}``.
    """

    config_class = MultiTaskConfig
    base_model_prefix = "mtl"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: MultiTaskConfig) -> None:
        super().__init__(config)
        if config.encoder_config is None:
            raise ValueError("MultiTaskConfig.encoder_config is required to build a MultiTaskModel.")
        tasks = config.task_list
        if not tasks:
            raise ValueError("MultiTaskConfig has no tasks; give at least one Task.")
        self.tasks: dict[str, Task] = {t.name: t for t in tasks}
        if config.sharing == "hard":
            self.encoder = AutoModel.from_config(config.encoder_config)
            if config.encoder_adapter is not None:
                self.encoder = wrap_encoder(self.encoder, config.encoder_adapter)
        else:
            self.encoders = nn.ModuleDict({name: AutoModel.from_config(config.encoder_config) for name in self.tasks})
        self.heads = nn.ModuleDict({t.name: head_class(t.kind)(t, config) for t in tasks})
        self.post_init()

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoModel") -> None:
        """A no-op: :meth:`save_pretrained` writes the ``auto_map`` and its module itself. (Transformers calls this
        when loading through ``trust_remote_code``; it would then copy this file over that module on saving.)"""

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, merge_adapter: bool = False,
                        **kwargs: Any) -> None:
        """``PreTrainedModel.save_pretrained`` plus the ``auto_map`` module (see :data:`AUTO_MODULE`).

        With an encoder adapter, the directory holds the adapter in ``peft``'s format under ``encoder/`` and the
        heads in ``model.safetensors`` (no copy of the frozen encoder); ``merge_adapter=True`` saves a plain model
        with the adapter merged into the encoder's weights instead (:meth:`merged_model`).
        """
        if merge_adapter:
            if not self.has_adapter:
                raise ValueError("merge_adapter=True, but this model's encoder has no adapter.")
            self.merged_model().save_pretrained(save_directory, *args, **kwargs)
            return
        self.config.auto_map = dict(AUTO_MAP)
        if self.has_adapter:
            state = kwargs.pop("state_dict", None)
            state = self.state_dict() if state is None else state
            encoder_state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
            kwargs["state_dict"] = {k: v for k, v in state.items() if not k.startswith("encoder.")}
            self.encoder.save_pretrained(str(Path(save_directory, ADAPTER_SUBFOLDER)), state_dict=encoder_state,
                                         is_main_process=kwargs.get("is_main_process", True))
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            Path(save_directory, f"{AUTO_MODULE}.py").write_text(AUTO_MODULE_SOURCE, encoding="utf-8")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any,
                        base_encoder: str | None = None, **kwargs: Any) -> MultiTaskModel:
        """``PreTrainedModel.from_pretrained``; a directory saved with an encoder adapter is rebuilt from the base
        encoder (``base_encoder``, default: the ``base_model_name_or_path`` recorded in the adapter config), the
        adapter (``peft.PeftModel.from_pretrained``, trainable) and the saved heads."""
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        if not model.has_adapter:
            if base_encoder is not None:
                raise ValueError(f"base_encoder={base_encoder!r} was given, but {pretrained_model_name_or_path} "
                                 "holds no encoder adapter.")
            return model
        from peft import PeftModel

        base = base_encoder or model.config.encoder_adapter.get("base_model_name_or_path")
        try:
            encoder = AutoModel.from_pretrained(base, dtype=model.dtype)
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"The encoder adapter in {pretrained_model_name_or_path} was trained on the base encoder "
                             f"{base!r}, which cannot be loaded ({error}); pass base_encoder=PATH_OR_HUB_ID.") from None
        adapter_dir = Path(pretrained_model_name_or_path, ADAPTER_SUBFOLDER)
        adapter_source = str(adapter_dir) if adapter_dir.is_dir() else str(pretrained_model_name_or_path)
        subfolder = {} if adapter_dir.is_dir() else {"subfolder": ADAPTER_SUBFOLDER}
        model.encoder = PeftModel.from_pretrained(encoder, adapter_source, is_trainable=True, **subfolder
                                                  ).to(model.device)
        model.eval()
        return model

    def load_trained_weights(self, directory: str | os.PathLike) -> None:
        """Load the heads and the encoder adapter saved in ``directory`` into this model in place (a checkpoint
        being resumed or the best checkpoint at the end of training); any other saved tensor is an error."""
        import safetensors.torch

        if not self.has_adapter:
            raise ValueError("load_trained_weights reads adapter checkpoints; this model's encoder has no adapter.")
        heads = safetensors.torch.load_file(str(Path(directory, "model.safetensors")), device="cpu")
        result = self.load_state_dict(heads, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("encoder.")]
        if missing or result.unexpected_keys:
            raise ValueError(f"{directory}/model.safetensors does not match the model's heads: missing {missing[:5]}, "
                             f"unexpected {result.unexpected_keys[:5]}.")
        load_adapter_weights(self.encoder, Path(directory, ADAPTER_SUBFOLDER))

    def merged_model(self) -> MultiTaskModel:
        """A plain copy of this model with the adapter merged into the encoder's weights (``W + (α/r)·B A``, through
        ``peft``'s ``merge_and_unload``), for serving without ``peft``; this model is left unchanged."""
        if not self.has_adapter:
            raise ValueError("merged_model() needs an encoder adapter; this model has none.")
        config = copy.deepcopy(self.config)
        config.encoder_adapter = None
        merged = type(self)(config)
        merged.encoder.load_state_dict(copy.deepcopy(self.encoder).merge_and_unload().state_dict())
        merged.heads.load_state_dict(self.heads.state_dict())
        merged.name_or_path = self.name_or_path
        return merged.to(device=self.device, dtype=self.dtype)

    @property
    def has_adapter(self) -> bool:
        """True when the shared encoder carries a ``peft`` adapter (``MultiTaskConfig.encoder_adapter``)."""
        return self.config.encoder_adapter is not None

    def post_init(self) -> None:
        super().post_init()
        # Transformers collects tied weights (a seq2seq decoder's output layer ↔ its embeddings) from direct
        # children only; the heads' models sit inside ``heads``, so gather them from every sub-model.
        self.all_tied_weights_keys = self.get_expanded_tied_weights_keys(all_submodels=True)
        if self.config.encoder_adapter is not None:
            # A saved adapter model holds only the heads in model.safetensors; from_pretrained loads the encoder.
            self._keys_to_ignore_on_load_missing = {*(self._keys_to_ignore_on_load_missing or ()), r"^encoder\."}

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def from_encoder(
        cls,
        encoder_name_or_path: str,
        tasks: Sequence[Task],
        tokenizer: PreTrainedTokenizerBase | None = None,
        peft_config: Any | None = None,
        **config_kwargs: Any,
    ) -> MultiTaskModel:
        """Build a model around a pretrained encoder (hub id or local folder).

        ``peft_config`` (a ``peft`` config such as ``LoraConfig(r=8, lora_alpha=16)``, or its dict) puts that
        adapter on the shared encoder and freezes the encoder's own weights (:mod:`hf_mtl.adapters`).

        The encoder copies get its weights; each head is then warm-started from it (``TaskHead.warm_start``:
        a seq2seq decoder takes the encoder's weights, BERT2BERT-style) or freshly initialised. A seq2seq
        task needs the start/end/padding token ids: from ``decoder_token_ids`` if given, else from
        ``tokenizer`` (loaded from ``encoder_name_or_path`` when omitted). A given tokenizer's pad/bos/eos ids go
        into the config, as ``transformers.Trainer`` would otherwise align them with a warning.
        """
        if peft_config is not None:  # checked before anything loads
            config_kwargs["encoder_adapter"] = adapter_config_dict(peft_config, str(encoder_name_or_path))
        encoder = AutoModel.from_pretrained(encoder_name_or_path)
        needs_ids = any(head_class(t.kind).needs_tokenizer for t in tasks)
        if needs_ids and config_kwargs.get("decoder_token_ids") is None:
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(encoder_name_or_path)
            config_kwargs["decoder_token_ids"] = decoder_token_ids(tokenizer)
        if tokenizer is not None:
            # The tokenizer's special tokens, so that the Trainer has nothing to align (and warn about).
            config_kwargs = {**special_token_ids(tokenizer), **config_kwargs}
        config = MultiTaskConfig(encoder_config=encoder.config, tasks=list(tasks), **config_kwargs)
        model = cls(config)
        for head in model.heads.values():
            head.warm_start(encoder)
        if model.has_adapter:  # the pretrained encoder itself, wrapped (the adapter's weights start fresh)
            model.encoder = wrap_encoder(encoder, config.encoder_adapter)
            # peft resolves defaults (e.g. the target modules of the encoder's architecture): record them.
            config.encoder_adapter = adapter_config_dict(model.encoder.peft_config["default"], str(encoder_name_or_path))
        else:
            for task_encoder in model.shared_encoders():
                task_encoder.load_state_dict(encoder.state_dict())
        return model

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, TaskHead):
            module.init_weights(getattr(self.config.encoder_config, "initializer_range", 0.02))

    # --- structure ----------------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def shared_encoders(self) -> list[nn.Module]:
        return [self.encoder] if self.config.sharing == "hard" else list(self.encoders.values())

    def encoder_for(self, task: str) -> nn.Module:
        return self.encoder if self.config.sharing == "hard" else self.encoders[task]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss depends on (the combined part of the gradient)."""
        if self.config.sharing == "soft":
            return []
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def task_specific_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters only ``task``'s loss depends on: its head, a seq2seq decoder included (and its encoder
        copy under soft sharing)."""
        params = list(self.heads[task].parameters())
        if self.config.sharing == "soft":
            params += list(self.encoders[task].parameters())
        return [p for p in params if p.requires_grad]

    def get_input_embeddings(self) -> nn.Module:
        return self.shared_encoders()[0].get_input_embeddings()

    @contextlib.contextmanager
    def capture_representations(self) -> Iterator[dict[str, torch.Tensor]]:
        """Collect the representations ``forward`` computes, as the very tensors the losses depend on.

        Wrappers such as DDP re-emit a module's outputs through their own autograd nodes, so the
        ``representations`` of a wrapped model's output are not on the path from ``z`` to the losses;
        differentiating the losses with respect to the captured tensors is always right.
        """
        captured: dict[str, torch.Tensor] = {}
        self._captured_representations = captured
        try:
            yield captured
        finally:
            self._captured_representations = None

    # --- computation --------------------------------------------------------------------------------
    def encode(self, inputs: Mapping[str, torch.Tensor], task: str | None = None) -> torch.Tensor:
        """Shared representation ``z`` (batch × tokens × hidden) of ``inputs``."""
        encoder = self.encoder if task is None else self.encoder_for(task)
        kwargs = {k: inputs[k] for k in ENCODER_INPUT_KEYS if k in inputs and inputs[k] is not None}
        return encoder(**kwargs, return_dict=True).last_hidden_state

    def head_loss(
        self, task: str, z: torch.Tensor, batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(loss, logits)`` of ``task``'s head on representation ``z`` for the task's sub-batch ``batch``
        (``attention_mask``, ``labels``, ...); the loss is ``None`` without labels."""
        head = self.heads[task]
        logits = head(z, batch)
        return (head.loss(logits, batch) if batch.get("labels") is not None else None), logits

    @staticmethod
    def task_batch(inputs: Mapping[str, Any], labels: Mapping[str, torch.Tensor], task: str) -> dict[str, Any]:
        """The sub-batch of ``task`` in the shared-input layout: the common inputs plus that task's labels."""
        return {**inputs, "labels": labels.get(task)}

    def soft_sharing_penalty(self) -> torch.Tensor | None:
        """``coef · Σ_{i<j} ||θ_i − θ_j||²`` over the task encoders' parameters (``None`` under hard sharing)."""
        if self.config.sharing != "soft":
            return None
        encoders = list(self.encoders.values())
        device = next(self.parameters()).device
        penalty = torch.zeros((), device=device)
        for i in range(len(encoders)):
            for j in range(i + 1, len(encoders)):
                for p_i, p_j in zip(encoders[i].parameters(), encoders[j].parameters(), strict=True):
                    penalty = penalty + (p_i - p_j).pow(2).sum()
        return self.config.soft_sharing_coef * penalty

    def check_tasks(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self.tasks]
        if unknown:
            raise ValueError(
                f"Batch has task(s) {unknown} with no head in this model; the model's tasks are {self.task_names}."
            )

    def predict(
        self,
        texts: str | Sequence[str],
        text_pairs: str | Sequence[str] | None = None,
        tasks: str | Sequence[str] | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Predictions on raw text: ``{task: [one result per text]}``.

        A result is ``{"label", "score"}`` (classification: the class name from ``Task.label_names`` and its
        probability), ``{"score"}`` (regression: the value), ``{"entities": [{"entity", "score", "word", "start",
        "end", "index"}]}`` (token classification: one tag per word) or ``{"generated_text"}`` (seq2seq). Sentence-pair
        tasks run when ``text_pairs`` are given (one per text); ``tasks`` restricts the tasks (default: every task
        the inputs fit). The tokenizer defaults to the one saved with the model (``trainer.save_model``).
        """
        from hf_mtl.inference import predict_texts

        return predict_texts(self, texts, text_pairs, tasks, tokenizer, batch_size, max_length)

    def forward(
        self,
        task_batches: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        inputs: Mapping[str, torch.Tensor] | None = None,
        labels: Mapping[str, torch.Tensor] | None = None,
        return_dict: bool = True,
    ) -> MultiTaskModelOutput:
        if (task_batches is None) == (inputs is None):
            raise ValueError(
                "MultiTaskModel.forward takes either `task_batches` (disjoint layout) or `inputs` + `labels` "
                "(shared-input layout), not both or neither."
            )
        task_losses: dict[str, torch.Tensor] = {}
        logits: dict[str, torch.Tensor] = {}
        representations: dict[str, torch.Tensor] = {}
        if task_batches is not None:
            self.check_tasks(list(task_batches))
            for name, sub_batch in task_batches.items():
                z = self.encode(sub_batch, task=name)
                representations[name] = z
                loss, logits[name] = self.head_loss(name, z, sub_batch)
                if loss is not None:
                    task_losses[name] = loss
        else:
            labels = dict(labels or {})
            self.check_tasks(list(labels))
            names = list(labels) or self.task_names
            if self.config.sharing == "hard":
                z = self.encode(inputs)
                representations[SHARED_GROUP] = z
            for name in names:
                z_task = z if self.config.sharing == "hard" else self.encode(inputs, task=name)
                if self.config.sharing == "soft":
                    representations[name] = z_task
                loss, logits[name] = self.head_loss(name, z_task, self.task_batch(inputs, labels, name))
                if loss is not None:
                    task_losses[name] = loss
        if getattr(self, "_captured_representations", None) is not None:
            self._captured_representations.update(representations)
        penalty = self.soft_sharing_penalty()
        total = None
        if task_losses:
            total = sum(self.tasks[name].weight * loss for name, loss in task_losses.items())
            if penalty is not None:
                total = total + penalty
        return MultiTaskModelOutput(
            loss=total,
            task_losses=task_losses,
            logits=logits,
            representations=representations,
            soft_sharing_penalty=penalty,
        )


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The tokenizer's ``pad_token_id``/``bos_token_id``/``eos_token_id`` that it defines (what
    ``transformers.trainer_utils.align_special_tokens`` copies into a model's config)."""
    ids = {name: getattr(tokenizer, name) for name in ("pad_token_id", "bos_token_id", "eos_token_id")}
    return {name: value for name, value in ids.items() if value is not None}


def register_auto_classes() -> None:
    """Make ``AutoConfig``/``AutoModel.from_pretrained(dir)`` resolve ``model_type="hf_mtl"`` and
    ``transformers.pipeline("multi-task", model=dir)`` build a :class:`~hf_mtl.inference.MultiTaskPipeline`."""
    from hf_mtl.inference import register_pipeline  # it imports this module's classes: defined by now

    register_pipeline()
    try:
        AutoConfig.register(MultiTaskConfig.model_type, MultiTaskConfig)
    except ValueError:  # already registered
        pass
    try:
        AutoModel.register(MultiTaskConfig, MultiTaskModel)
    except ValueError:
        pass


register_auto_classes()
