"""Worker for the loss-masking DDP test: trains a tiny classifier in each masking mode, saves params and masks.

Run under ``torch.distributed.run --nproc_per_node 2`` with ``--batch_size 4 --clean_batch_size 2`` or as one
process with ``--batch_size 8 --clean_batch_size 4``: both see the same global noisy and clean batches.
``--fault drop_rank1`` makes every float32 all-reduce ignore rank 1 (a wrong reduction the test must catch).
"""

from __future__ import annotations

import argparse
import os
import sys

import datasets
import torch
import torch.distributed as dist
from transformers import AutoTokenizer

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task
from hf_mtl.data import tokenize_task_dataset

REVIEWS = ["a gripping film", "dull and long", "loved it", "no sense at all", "warm and charming", "tedious",
           "superb direction", "worst this year", "funny and smart", "bored actors", "instant classic",
           "nothing works", "clever script", "badly written", "a warm heart", "predictable"]
MODES = {
    "example_threshold": {"loss_masking": "example"},
    "example_keep_fraction": {"loss_masking": "example", "masking_keep_fraction": 0.5},
    "example_balanced": {"loss_masking": "example", "masking_balance_labels": True},
    "batch": {"loss_masking": "batch"},
}


def drop_rank_one_from_reductions() -> None:
    """Rank 1 contributes zeros to every float32 ``dist.all_reduce`` (gradients, clean gradients, losses)."""
    reduce = dist.all_reduce

    def wrong(tensor: torch.Tensor, *args, **kwargs):
        if dist.get_rank() == 1 and tensor.dtype == torch.float32:
            tensor.zero_()
        return reduce(tensor, *args, **kwargs)

    dist.all_reduce = wrong


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--clean_batch_size", type=int, required=True)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--fault", choices=["none", "drop_rank1"], default="none")
    args = parser.parse_args()
    if args.fault == "drop_rank1":
        drop_rank_one_from_reductions()
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(args.encoder)
    task = Task("polarity", num_labels=2)
    truth = [i % 2 for i in range(len(REVIEWS))]
    noisy_labels = [1 - y if i % 4 == 3 else y for i, y in enumerate(truth)]  # every fourth label flipped
    noisy = tokenize_task_dataset(task, datasets.Dataset.from_dict({"text": REVIEWS, "label": noisy_labels}),
                                  tokenizer, 16)
    clean = tokenize_task_dataset(task, datasets.Dataset.from_dict({"text": REVIEWS[::3], "label": truth[::3]}),
                                  tokenizer, 16)
    for name in args.modes:
        options = MODES[name]
        torch.manual_seed(0)
        model = MultiTaskModel.from_encoder(args.encoder, [task])
        training_args = MultiTaskTrainingArguments(
            output_dir=os.path.join(args.out, name), per_device_train_batch_size=args.batch_size,
            masking_clean_batch_size=args.clean_batch_size, max_steps=2, learning_rate=1e-3, report_to=[],
            save_strategy="no", seed=0, use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, logging_steps=1,
            **options)
        trainer = MultiTaskTrainer(model, training_args, train_dataset={"polarity": noisy},
                                   clean_dataset={"polarity": clean}, processing_class=tokenizer)
        records = []
        if options["loss_masking"] == "example":
            trainer.add_masking_observer(lambda batch, record, records=records: records.append(record))
        trainer.train()
        rank = trainer.args.process_index
        torch.save([(r.step, r.alignments, r.keep) for r in records], os.path.join(args.out, f"{name}_masks_{rank}.pt"))
        if rank == 0:
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                       os.path.join(args.out, f"{name}_params.pt"))
    trainer.end_training()  # the earlier modes' trainers are garbage by now: the group and its threads end here
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown, where leftover C++ threads can abort a finished rank (SIGABRT)


if __name__ == "__main__":
    main()
