"""Worker for the distributed tests: trains a tiny multi-task model and saves its parameters.

Run under ``torchrun --nproc_per_node 2`` (gloo, CPU; with ``--fsdp2`` the model is sharded by accelerate's
FSDP2 plugin) or as a single process with gradient accumulation 2; all see the same global batches, so all
must reach the same parameters.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import datasets
import torch
import torch.distributed as dist
from transformers import AutoTokenizer

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task
from hf_mtl.combiners import Combiner, get_combiner
from hf_mtl.data import tokenize_shared_dataset, tokenize_task_dataset

TEXTS = ["a gripping film", "dull and long", "loved it", "no sense at all", "warm and charming", "tedious",
         "superb direction", "worst this year", "funny and smart", "bored actors", "instant classic", "nothing works"]


class InverseNorm(Combiner):
    name = "inverse_norm"

    def __call__(self, gram=None, losses=None):
        return 1.0 / gram.diagonal().sqrt()


def allow_fsdp_on_cpu() -> None:
    """Let accelerate's FSDP plugin run on CPU processes (gloo).

    accelerate 1.16 turns the plugin on only for accelerator devices (``AcceleratorState`` checks for MULTI_GPU,
    MULTI_XPU, ...); FSDP2's ``fully_shard`` itself runs on CPU with gloo. This makes the one change the plugin
    needs — ``distributed_type`` FSDP with the plugin set — so the Trainer's FSDP2 path (accelerate's
    ``fsdp2_prepare_model``, the Trainer's FSDP branches, ``params`` mode's sharded buffer) runs here as on GPUs.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    AcceleratorState.__init__ = init


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", default="params")
    parser.add_argument("--layout", default="disjoint")
    parser.add_argument("--combiner", default="inverse_norm")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lora_r", type=int, default=None, help="LoRA of this rank on the encoder (peft)")
    parser.add_argument("--shard_task_gradients", choices=["auto", "True", "False"], default="auto")
    parser.add_argument("--fsdp2", action="store_true", help="FSDP2 through accelerate's FSDP plugin (gloo, CPU)")
    args = parser.parse_args()
    if args.fsdp2:
        allow_fsdp_on_cpu()
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(args.encoder)
    tasks = [Task("polarity", num_labels=2), Task("size", num_labels=3)]
    if args.layout == "disjoint":
        raw = {"polarity": {"text": TEXTS, "label": [i % 2 for i in range(len(TEXTS))]},
               "size": {"text": TEXTS[::-1], "label": [len(t) % 3 for t in TEXTS[::-1]]}}
        train = {t.name: tokenize_task_dataset(t, datasets.Dataset.from_dict(raw[t.name]), tokenizer, 16) for t in tasks}
    else:
        texts = TEXTS + [t.upper() for t in TEXTS]  # 24 rows: 3 steps of a global batch of 8, no epoch wrap
        raw = datasets.Dataset.from_dict({"text": texts, "label_polarity": [i % 2 for i in range(len(texts))],
                                          "label_size": [len(t) % 3 for t in texts]})
        train = tokenize_shared_dataset(tasks, raw, tokenizer, 16)
    torch.manual_seed(0)
    peft_config = None
    if args.lora_r is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules=["query", "value"],
                                 init_lora_weights=False)
    model = MultiTaskModel.from_encoder(args.encoder, tasks, peft_config=peft_config)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    training_args = MultiTaskTrainingArguments(
        output_dir=os.path.join(args.out, "run"), per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.accumulation, max_steps=args.steps, learning_rate=1e-3, report_to=[],
        save_strategy="no", seed=0, use_cpu=True, sampling_strategy="uniform", gradient_mode=args.mode,
        train_sampling_strategy="sequential", disable_tqdm=True, dataloader_num_workers=0, logging_steps=1,
        shard_task_gradients=None if args.shard_task_gradients == "auto" else args.shard_task_gradients == "True",
        **({"fsdp": True, "fsdp_config": {"fsdp_version": 2, "transformer_layer_cls_to_wrap": ["BertLayer"],
                                                  "reshard_after_forward": True}} if args.fsdp2 else {}))
    combiner = InverseNorm() if args.combiner == "inverse_norm" else get_combiner(args.combiner)
    trainer = MultiTaskTrainer(model, training_args, train_dataset=train, processing_class=tokenizer,
                               combiner=combiner)
    trainer.train()
    state = trainer.accelerator.get_state_dict(trainer.model)  # FSDP2: gathered from the shards on every rank
    buffer = getattr(trainer.step_strategy, "buffer", None)  # params mode's per-task gradient buffer
    if trainer.args.process_index == 0:
        torch.save({k: v.detach().clone() for k, v in state.items()},
                   os.path.join(args.out, "params.pt"))
        torch.save(initial, os.path.join(args.out, "initial.pt"))
        torch.save({"state": trainer.combiner.state_dict(), "weights": trainer.last_step.weights,
                    "buffer": None if buffer is None else type(buffer).__name__, "fsdp2": trainer.accelerator.is_fsdp2},
                   os.path.join(args.out, "combiner.pt"))
    distributed = dist.is_initialized()
    trainer.end_training()
    if distributed and trainer.args.process_index == 0:  # gloo's threads left after end_training (Linux)
        with open(os.path.join(args.out, "threads.json"), "w", encoding="utf-8") as handle:
            json.dump(gloo_threads_after(seconds=5.0), handle)
    exit_now()


def gloo_threads_after(seconds: float) -> list[str]:
    """Gloo's threads still alive, polled for up to ``seconds``: threads that a destroyed group told to stop
    may take a moment to exit, which is not a leak."""
    deadline = time.monotonic() + seconds
    while (left := [name for name in thread_names() if "gloo" in name]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def thread_names() -> list[str]:
    """Names of this process's threads; a thread that exits between the listing and the read is skipped."""
    names = []
    for path in glob.glob("/proc/self/task/*/comm"):
        try:
            names.append(Path(path).read_text().strip())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return sorted(names)


def exit_now() -> None:
    """Exit without interpreter teardown. Under FSDP2 the sharded model keeps the gloo process group (and its
    threads) alive after ``end_training``; torn down at interpreter exit, they can abort a rank that finished
    and saved everything (SIGABRT, "terminate called without an active exception")."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
