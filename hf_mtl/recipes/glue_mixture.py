"""Fine-tune one encoder on a mixture of text tasks with a gradient combiner (in the style of run_glue.py).

With no arguments it trains the embedded MiniLM encoder on three real tasks that install offline
(movie-review sentiment, Bible verse paraphrase pairs, party of a debate statement) and prints a
per-task metric table next to each task's majority-class baseline.

    python recipes/glue_mixture.py                                      # embedded default
    python recipes/glue_mixture.py --preset drug_reviews                # shared-input preset
    python recipes/glue_mixture.py --tasks sst2,mrpc,rte --model_name_or_path bert-base-uncased \\
        --combiner mgda --output_dir out/glue                           # GLUE from the hub (online)
    python recipes/glue_mixture.py recipes/configs/embedded_mgda.yaml  # a JSON/YAML config
    python recipes/glue_mixture.py --lora_r 8 --combiner mgda          # LoRA on the encoder (docs/adapters.md)
    hf-mtl train recipes/configs/embedded_mgda.yaml                    # the same, through the CLI

``recipes/glue_mixture.py`` is a thin wrapper around :func:`main`. Every run writes the per-step
diagnostics history (``mtl_history.jsonl``, :mod:`hf_mtl.callbacks`) to ``output_dir`` for
``hf-mtl plot OUTPUT_DIR``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import transformers
import yaml
from transformers import AutoTokenizer, set_seed

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtl.adapters import AdapterArguments
from hf_mtl.callbacks import MultiTaskDiagnosticsCallback
from hf_mtl.data import prepare_datasets
from hf_mtl.data.embedded import embedded_encoder_path
from hf_mtl.data.sources import SharedInputData, load_preset, load_task_data, majority_baseline
from hf_mtl.recipes.arguments import recipe_parser
from hf_mtl.recipes.config import command_line_overrides, typed_config

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments(AdapterArguments):
    """The encoder, its sharing and pooling, and an optional LoRA adapter on it (:class:`AdapterArguments`)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Encoder checkpoint (hub id or folder); default: the embedded MiniLM."}
    )
    sharing: str = field(default="hard", metadata={"help": "hard (one encoder) or soft (one copy per task)."})
    soft_sharing_coef: float = field(default=1e-3, metadata={"help": "Soft-sharing L2 penalty coefficient."})
    pooling: str = field(default="mean", metadata={"help": "Sentence pooling for heads: mean or cls."})


@dataclass
class DataArguments:
    preset: str | None = field(
        default=None, metadata={"help": "A preset: embedded_mixture (default when no --tasks) or drug_reviews."}
    )
    tasks: str | None = field(
        default=None,
        metadata={"help": "Comma-separated task names: embedded (rotten_tomatoes, bible_paraphrase, debate_party) "
                          "or GLUE (sst2, mrpc, rte, qnli, qqp, cola, stsb, mnli, wnli)."},
    )
    task_specs: str | None = field(
        default=None,
        metadata={"help": "User tasks from local files: a JSON list of specs, or the path of a JSON/YAML file "
                          "holding one (keys: name, kind, train_file, validation_file, text_column, "
                          "text_pair_column, label_column, label_names, metrics, role, weight)."},
    )
    glue_data_dir: str | None = field(
        default=None, metadata={"help": "Local copy of the GLUE hub repository (offline GLUE)."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap each task's train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap each task's validation split."})


DEFAULTS = {
    "output_dir": "outputs/glue_mixture",
    "max_steps": 200,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "learning_rate": 1e-4,
    "warmup_steps": 20,
    "weight_decay": 0.01,
    "sampling_strategy": "temperature",
    "sampling_temperature": 2.0,
    "logging_steps": 25,
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": "none",
    "seed": 42,
    "use_cpu": False,
}


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, MultiTaskTrainingArguments]:
    """Command-line arguments, or a JSON/YAML config file followed by optional ``--key value`` overrides (e.g.
    ``config.yaml --resume_from_checkpoint True``); config values are converted and checked by field type."""
    types = (ModelArguments, DataArguments, MultiTaskTrainingArguments)
    parser = recipe_parser(types, DEFAULTS, __doc__)
    if argv and argv[0].endswith((".json", ".yaml", ".yml")):
        with open(argv[0], encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
        if not isinstance(config, dict):
            raise ValueError(f"Config file {argv[0]} must hold a mapping of argument names to values.")
        config.update(command_line_overrides(argv[1:], argv[0]))
        return parser.parse_dict(typed_config({**DEFAULTS, **config}, types, f"Config file {argv[0]}"),
                                 allow_extra_keys=False)
    return parser.parse_args_into_dataclasses(args=argv)


def load_sources(data_args: DataArguments) -> Any:
    caps = {"max_train_samples": data_args.max_train_samples, "max_eval_samples": data_args.max_eval_samples}
    specs: list[Any] = [name.strip() for name in (data_args.tasks or "").split(",") if name.strip()]
    user_specs = data_args.task_specs
    if isinstance(user_specs, str):
        text = user_specs.strip()
        if text.startswith("["):
            user_specs = json.loads(text)
        else:
            with open(text, encoding="utf-8") as handle:
                user_specs = yaml.safe_load(handle)
    if user_specs:
        if not isinstance(user_specs, list):
            raise ValueError(f"task_specs must be a list of task specs, got {type(user_specs).__name__}.")
        specs.extend(user_specs)
    if data_args.preset is not None or not specs:
        if specs:
            raise ValueError("Give either --preset or --tasks/--task_specs, not both.")
        return load_preset(data_args.preset or "embedded_mixture", **caps)
    glue_local = {"data_dir": data_args.glue_data_dir} if data_args.glue_data_dir else {}
    return [load_task_data(spec, **caps, **(glue_local if isinstance(spec, str) else {})) for spec in specs]


def baselines(source: Any) -> dict[str, float | None]:
    if isinstance(source, SharedInputData):
        out = {}
        for task in source.tasks:
            column = f"label_{task.name}"
            out[task.name] = majority_baseline(source.validation, column) if task.kind.is_classification else None
        return out
    return {d.task.name: majority_baseline(d.validation) if d.task.kind.is_classification else None for d in source}


def results_table(metrics: dict[str, float], tasks: list, majority: dict[str, float | None]) -> str:
    lines = ["| task | metric | value | majority baseline |", "| --- | --- | --- | --- |"]
    for task in tasks:
        for metric in task.metrics:
            value = metrics.get(f"eval_{task.name}_{metric}")
            if value is None:
                continue
            base = majority[task.name] if metric == "accuracy" and majority.get(task.name) is not None else None
            lines.append(f"| {task.name} | {metric} | {value:.4f} | {'' if base is None else f'{base:.4f}'} |")
    lines.append(f"| average | first metric | {metrics['eval_average']:.4f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    peft_config = model_args.peft_config()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    logger.info(
        "Process rank: %d of %d, device: %s, distributed type: %s", training_args.process_index,
        training_args.world_size, training_args.device, training_args.distributed_state.distributed_type.value,
    )
    set_seed(training_args.seed)
    encoder = model_args.model_name_or_path or embedded_encoder_path()
    source = load_sources(data_args)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    data = prepare_datasets(source, tokenizer, data_args.max_seq_length)
    model = MultiTaskModel.from_encoder(encoder, data.tasks, tokenizer=tokenizer, sharing=model_args.sharing,
                                        soft_sharing_coef=model_args.soft_sharing_coef, pooling=model_args.pooling,
                                        peft_config=peft_config)
    trainer = MultiTaskTrainer(model, training_args, train_dataset=data.train, eval_dataset=data.validation,
                               processing_class=tokenizer, callbacks=[MultiTaskDiagnosticsCallback()])
    start = time.time()
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_metrics = dict(train_result.metrics)
    trainer.log_metrics("train", train_metrics)
    trainer.save_metrics("train", train_metrics)
    metrics = trainer.evaluate()
    majority = baselines(source)
    for name, value in majority.items():
        if value is not None:
            metrics[f"eval_{name}_majority_baseline"] = value
    metrics["wall_time_s"] = time.time() - start
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.save_model()  # weights, tokenizer and a model card with these metrics: loads in one line
    if model_args.save_merged_model and trainer.is_world_process_zero():
        merged_dir = os.path.join(training_args.output_dir, "merged")
        model.save_pretrained(merged_dir, merge_adapter=True)
        tokenizer.save_pretrained(merged_dir)
    table = results_table(metrics, data.tasks, majority)
    if trainer.is_world_process_zero():
        with open(os.path.join(training_args.output_dir, "results.md"), "w", encoding="utf-8") as handle:
            handle.write(table + "\n")
        print(table)
    trainer.end_training()  # under torchrun/accelerate launch: the process group ends before interpreter exit
    return metrics


if __name__ == "__main__":
    main()
