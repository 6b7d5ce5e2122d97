#!/usr/bin/env python
"""Step overhead of the gradient modes against a plain ``Trainer`` step, on the same model and batch.

For K = 2, 4, 8 tasks on the embedded MiniLM encoder, disjoint (a sub-batch per task) and shared-input
(every example labelled for every task) batches, each method's training step (forward, backward,
combination; not the optimizer step, which is the same for all) is timed interleaved with a plain
``transformers.Trainer.training_step`` on the summed loss, so the ratio is stable on a noisy machine:

* ``plain``            — ``transformers.Trainer.training_step`` (the reference, ratio 1.0);
* ``params``           — per-task gradients of the encoder, Gram, MGDA, combined ``.grad``;
* ``params_bf16``      — the same with ``task_gradient_dtype="bfloat16"`` (the K×P buffer in bfloat16);
* ``encoder_output``   — Gram of ``∂L_k/∂z``, MGDA, one backward of ``Σ w_k L_k``;
* ``autograd_floor``   — shared input only: one forward + K ``autograd.grad`` calls, nothing else;
* ``autograd_batched`` — shared input only: one forward, the K cotangents ``∂L_k/∂z``, one vectorised
  backward of all K through the encoder (``is_grads_batched``, vmap), nothing else;
* ``torchjd_mgda`` / ``torchjd_upgrad`` — TorchJD's ``mtl_backward`` + ``jac_to_grad`` on the same work;
* ``params@REF``       — with ``--baseline_ref REF``: ``params`` with the ``TaskGradientBuffer`` of git revision
  ``REF`` (before/after comparisons of the buffer in one run).

Under ``torchrun`` (``--nproc_per_node W``) every rank runs the same steps on its own batch and the rows are
the distributed ones: ``plain`` is the local step plus the one all-reduce of every gradient that DDP does,
``params_sharded`` reduce-scatters the per-task gradients and all-reduces the K×K Gram
(``shard_task_gradients=True``), ``params_allreduce`` all-reduces the K×P buffer whole; ``elements_sent``
counts what one rank sends per step (ring algorithm). With ``--fsdp`` the model is sharded by FSDP2's
``fully_shard`` (each encoder layer, then the root): ``plain`` is one backward of the summed loss (one
reduce-scatter of the gradients), ``params_fsdp`` the ``params`` step (one backward and reduce-scatter per
task, the K×K Gram all-reduced); ``elements_sent`` counts the gradient reductions (the parameter all-gathers
are the same in both).

Peak memory (MiB) is what two steps of one method add to a fresh process that has built the model and the
batch: the peak resident set above the set-up state (CPU, Linux: ``/proc/self/clear_refs`` resets the peak),
or ``torch.cuda.max_memory_allocated`` above the allocated set-up (GPU); ``buffer_mb`` is the K×P buffer's
share of it.

    python benchmarks/step_overhead.py --quick              # < 60 s on 2 cores
    python benchmarks/step_overhead.py --json results.json  # full table
    torchrun --nproc_per_node 2 benchmarks/step_overhead.py --json results_ddp.json
    torchrun --nproc_per_node 2 benchmarks/step_overhead.py --fsdp --layouts disjoint --json results_fsdp.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoTokenizer, Trainer, TrainingArguments

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task
from hf_mtl.data.embedded import embedded_encoder_path, load_rotten_tomatoes
from hf_mtl.gradients import Differentiated, average_gradients_over_ranks, distributed

METHODS = ("plain", "params", "params_bf16", "encoder_output", "autograd_floor", "autograd_batched", "torchjd_mgda",
           "torchjd_upgrad")
DISTRIBUTED_METHODS = ("plain", "params_sharded", "params_allreduce")
FSDP_METHODS = ("plain", "params_fsdp")


def make_batch(tokenizer: Any, layout: str, num_tasks: int, batch_size: int, seq_len: int,
               device: torch.device) -> tuple[list[Task], dict[str, Any]]:
    texts = list(load_rotten_tomatoes().train["text"][: batch_size])
    generator = torch.Generator().manual_seed(0)
    tasks = [Task(f"task{k}", num_labels=3) for k in range(num_tasks)]

    def encode(chunk: list[str]) -> dict[str, torch.Tensor]:
        enc = tokenizer(chunk, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items()}

    if layout == "shared":
        labels = {t.name: torch.randint(0, 3, (batch_size,), generator=generator).to(device) for t in tasks}
        return tasks, {"inputs": encode(texts), "labels": labels}
    per_task = batch_size // num_tasks
    task_batches = {}
    for k, task in enumerate(tasks):
        sub = encode(texts[k * per_task:(k + 1) * per_task])
        sub["labels"] = torch.randint(0, 3, (per_task,), generator=generator).to(device)
        task_batches[task.name] = sub
    return tasks, {"task_batches": task_batches}


class Bench:
    """One model and batch; a step function per method, each leaving the summed-or-combined ``.grad``."""

    def __init__(self, layout: str, num_tasks: int, batch_size: int, seq_len: int, device: torch.device,
                 output_dir: str, baseline_ref: str | None = None, fsdp: bool = False) -> None:
        encoder = embedded_encoder_path()
        tokenizer = AutoTokenizer.from_pretrained(encoder)
        self.tasks, self.batch = make_batch(tokenizer, layout, num_tasks, batch_size, seq_len, device)
        torch.manual_seed(0)
        self.model = MultiTaskModel.from_encoder(encoder, self.tasks).to(device)
        self.fsdp = fsdp
        if fsdp:
            from torch.distributed.fsdp import fully_shard

            for layer in self.model.encoder.encoder.layer:
                fully_shard(layer)
            fully_shard(self.model)
        common = dict(output_dir=output_dir, report_to=[], use_cpu=device.type == "cpu", disable_tqdm=True,
                      per_device_train_batch_size=batch_size)
        self.plain = Trainer(self.model, TrainingArguments(**common))
        variants = {"params": ("params", None, "float32"), "params_bf16": ("params", None, "bfloat16"),
                    "encoder_output": ("encoder_output", None, "float32"),
                    "params_sharded": ("params", True, "float32"), "params_allreduce": ("params", False, "float32")}
        if fsdp:
            variants = {"params_fsdp": ("params", None, "float32")}
        if baseline_ref:
            variants[f"params@{baseline_ref}"] = ("params", None, "float32")
        self.engines = {
            name: MultiTaskTrainer(self.model, MultiTaskTrainingArguments(
                **common, combiner="mgda", gradient_mode=mode, shard_task_gradients=shard, task_gradient_dtype=dtype),
                processing_class=tokenizer)
            for name, (mode, shard, dtype) in variants.items()
        }
        if baseline_ref:
            strategy = self.engines[f"params@{baseline_ref}"].step_strategy
            strategy._buffer = baseline_buffer(baseline_ref)(self.model.shared_parameters(), num_tasks)
        for trainer in [self.plain, *self.engines.values()]:
            trainer.current_gradient_accumulation_steps = 1
        self.layout = layout

    def buffer_mb(self, method: str) -> float | None:
        """The K×P buffer of a ``params`` method (MiB), after it has run once."""
        engine = self.engines.get(method)
        buffer = getattr(engine.step_strategy, "buffer", None) if engine is not None else None
        return None if buffer is None else round(buffer.nbytes / 2**20, 1)

    def step(self, method: str) -> Callable[[], None]:
        model = self.model
        if method == "plain":
            return self._plain
        if method in self.engines:
            return lambda: self.engines[method].training_step(model, self.batch)
        if method == "autograd_floor":
            return lambda: autograd_floor(model, self.tasks, self.batch)
        if method == "autograd_batched":
            return lambda: autograd_batched(model, self.tasks, self.batch)
        return lambda: self._torchjd(method.removeprefix("torchjd_"))

    def _plain(self) -> None:
        self.plain.training_step(self.model, self.batch)  # under FSDP its backward reduce-scatters
        if not self.fsdp:
            average_gradients_over_ranks([p for p in self.model.parameters() if p.requires_grad])  # DDP's all-reduce

    def _losses_and_features(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        model = self.model
        if self.layout == "shared":
            losses, z = shared_input_losses(model, self.tasks, self.batch)
            return losses, [z]
        losses, features = [], []
        for t in self.tasks:
            sub = self.batch["task_batches"][t.name]
            z = model.encode(sub)
            features.append(z)
            losses.append(model.head_loss(t.name, z, sub)[0])
        return losses, features

    def _torchjd(self, aggregator_name: str) -> None:
        from torchjd.aggregation import MGDA, UPGrad
        from torchjd.autojac import jac_to_grad, mtl_backward

        model = self.model
        model.train()
        losses, features = self._losses_and_features()
        shared = model.shared_parameters()
        mtl_backward(losses, features=features, shared_params=shared,
                     tasks_params=[model.task_specific_parameters(t.name) for t in self.tasks])
        jac_to_grad([p for p in shared if getattr(p, "jac", None) is not None],
                    MGDA() if aggregator_name == "mgda" else UPGrad())

    def run_once(self, method: str) -> float:
        fn = self.step(method)
        self.model.zero_grad(set_to_none=True)
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        return time.perf_counter() - start


def shared_input_losses(model: MultiTaskModel, tasks: list[Task], batch: dict[str, Any]
                        ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Shared input: the K task losses of one encoder forward, and its output ``z``."""
    inputs, labels = batch["inputs"], batch["labels"]
    z = model.encode(inputs)
    return [model.head_loss(t.name, z, model.task_batch(inputs, labels, t.name))[0] for t in tasks], z


def autograd_floor(model: MultiTaskModel, tasks: list[Task], batch: dict[str, Any]) -> None:
    """Shared input: one forward and one ``autograd.grad`` per task (the least work that yields the K per-task
    gradients), nothing else."""
    model.train()
    losses, _ = shared_input_losses(model, tasks, batch)
    shared = model.shared_parameters()
    for k, loss in enumerate(losses):
        torch.autograd.grad(loss, shared + model.task_specific_parameters(tasks[k].name),
                            retain_graph=k < len(losses) - 1, allow_unused=True)


def autograd_batched(model: MultiTaskModel, tasks: list[Task], batch: dict[str, Any]) -> None:
    """Shared input: one forward, the K cotangents ``∂L_k/∂z``, one vectorised backward of all K through the
    encoder (``is_grads_batched``), nothing else."""
    model.train()
    losses, z = shared_input_losses(model, tasks, batch)
    cotangents = torch.stack([torch.autograd.grad(loss, z, retain_graph=True)[0] for loss in losses])
    torch.autograd.grad(z, model.shared_parameters(), grad_outputs=cotangents, is_grads_batched=True,
                        allow_unused=True)


def baseline_buffer(ref: str) -> type:
    """``TaskGradientBuffer`` as of git revision ``ref``, adapted to today's calls (``reduce``)."""
    import importlib.util
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(["git", "show", f"{ref}:hf_mtl/gradients.py"], cwd=root, capture_output=True, text=True,
                            check=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "baseline_gradients.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("baseline_gradients", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class Baseline(module.TaskGradientBuffer):
        def reduce(self, extra: torch.Tensor | None = None) -> torch.Tensor | None:
            reduce = getattr(super(), "reduce", None) or super().all_reduce_with
            return reduce(extra)

        @property
        def nbytes(self) -> int:
            return self.jacobian.numel() * self.jacobian.element_size()

        def recording_rows(self) -> contextlib.AbstractContextManager:
            return getattr(super(), "recording_rows", contextlib.nullcontext)()

        def differentiated(self) -> Differentiated:
            if hasattr(super(), "differentiated"):
                return super().differentiated()
            return Differentiated(list(range(len(self.params))), [], list(self.params))

        def add_differentiated(self, task: int, plan: Differentiated, grads: list) -> None:
            if hasattr(super(), "add_differentiated"):
                super().add_differentiated(task, plan, grads)
            else:
                self.add(task, grads)

    return Baseline


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def methods_for(layout: str, args: argparse.Namespace) -> list[str]:
    if distributed():
        return list(FSDP_METHODS if args.fsdp else DISTRIBUTED_METHODS)
    methods = [m for m in METHODS if layout == "shared" or not m.startswith("autograd_")]
    if args.baseline_ref:
        methods.insert(2, f"params@{args.baseline_ref}")
    methods = [m for m in methods if not (args.skip_torchjd and m.startswith("torchjd_"))]
    if args.methods:
        methods = ["plain", *(m for m in methods if m in args.methods.split(",") and m != "plain")]
    return methods


def elements_sent(bench: Bench, method: str) -> int | None:
    """Elements one rank sends per step (ring algorithm): DDP's all-reduce of every gradient, or the buffer's."""
    if not distributed():
        return None
    world = torch.distributed.get_world_size()
    if bench.fsdp:  # one reduce-scatter of the gradients per backward; params_fsdp: one per task + the Gram
        scatter = sum(p.numel() for p in bench.model.parameters() if p.requires_grad) * (world - 1) // world
        if method == "plain":
            return scatter
        return len(bench.tasks) * scatter + bench.engines[method].step_strategy.buffer.elements_sent
    if method == "plain":
        numel = sum(p.numel() for p in bench.model.parameters() if p.requires_grad) + len(list(bench.model.parameters()))
        return 2 * numel * (world - 1) // world
    return bench.engines[method].step_strategy.buffer.elements_sent


def time_config(layout: str, num_tasks: int, args: argparse.Namespace, device: torch.device) -> list[dict]:
    bench = Bench(layout, num_tasks, args.batch_size, args.seq_len, device, args.output_dir, args.baseline_ref,
                  fsdp=args.fsdp)
    methods = methods_for(layout, args)
    for method in methods:  # warm-up
        bench.run_once(method)
    ratios: dict[str, list[float]] = {m: [] for m in methods}
    floor_ratios: dict[str, list[float]] = {m: [] for m in methods}  # per round, against the same round's floor
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.repeats):
        times = {m: bench.run_once(m) for m in methods}
        for m in methods:
            ratios[m].append(times[m] / times["plain"])
            seconds[m].append(times[m])
            if "autograd_floor" in times:
                floor_ratios[m].append(times[m] / times["autograd_floor"])
    rows = []
    processes = torch.distributed.get_world_size() if distributed() else 1
    for m in methods:
        rows.append({"mode": m, "layout": layout, "tasks": num_tasks, "processes": processes,
                     "ratio_vs_plain": round(statistics.median(ratios[m]), 3),
                     "ratio_vs_floor": round(statistics.median(floor_ratios[m]), 3) if floor_ratios[m] else None,
                     "step_ms": round(1000 * statistics.median(seconds[m]), 1), "peak_mem_mb": None,
                     "peak_tensor_mb": None, "buffer_mb": bench.buffer_mb(m), "elements_sent": elements_sent(bench, m)})
    return rows


def peak_memory(layout: str, num_tasks: int, methods: list[str],
                args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Each method's peak memory above its set-up state by each measure in :data:`PEAK_MEASURES` (MiB), in a fresh
    process per method and measure (so the first step's allocations, the K×P buffer's among them, count in both);
    under ``torchrun`` the probe is launched on as many processes (rank 0's figures)."""
    world = torch.distributed.get_world_size() if distributed() else 1
    launcher = [sys.executable] if world == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world)]
    options = ["--batch_size", str(args.batch_size), "--seq_len", str(args.seq_len), "--output_dir", args.output_dir]
    if args.baseline_ref:
        options += ["--baseline_ref", args.baseline_ref]
    if args.fsdp:
        options.append("--fsdp")
    launched = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR",
                "MASTER_PORT", "TORCHELASTIC_RUN_ID")
    env = {k: v for k, v in os.environ.items() if k not in launched}
    return {m: run_probes([*launcher, __file__], f"{layout},{num_tasks},{m}", options, env) for m in methods}


def run_probes(command: list[str], spec: str, options: list[str],
               env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``command --_memory_probe SPEC,MEASURE OPTIONS`` once per measure of :data:`PEAK_MEASURES`, each in a
    fresh process; the figure each printed (its last ``peak`` line, MiB)."""
    peaks = {}
    for field in PEAK_MEASURES:
        out = subprocess.run([*command, "--_memory_probe", f"{spec},{field}", *options], capture_output=True,
                             text=True, check=True, env=env)
        printed = [line for line in out.stdout.splitlines() if line.startswith("peak ")][-1]
        peaks[field] = round(float(printed.split()[1]), 1)
    return peaks


def process_memory_kib(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` (peak resident set) of this process from ``/proc/self/status`` (Linux)."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}: the CPU memory probe needs Linux.")


def peak_above_setup(run_step: Callable[[], None], device: torch.device) -> float:
    """Peak memory of two calls of ``run_step`` above the state right before them (MiB): the peak resident
    set, reset through ``/proc/self/clear_refs`` (CPU), or ``max_memory_allocated`` (GPU)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = process_memory_kib("VmRSS")
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")  # resets VmHWM to the current resident set
    for _ in range(2):
        run_step()
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return (process_memory_kib("VmHWM") - base) / 1024


def peak_tensors_above_setup(run_step: Callable[[], None], device: torch.device) -> float:
    """Peak bytes held by live tensors during two calls of ``run_step``, above the state right before them (MiB):
    on CPU the allocator's running total as ``torch.profiler`` records it with ``profile_memory`` (the counterpart of
    ``max_memory_allocated``, blind to what the C library's ``malloc`` keeps after a free); on GPU
    ``max_memory_allocated``, the same figure as :func:`peak_above_setup`."""
    if device.type == "cuda":
        return peak_above_setup(run_step, device)
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(2):
            run_step()
    pending = list(prof.profiler.kineto_results.experimental_event_tree())
    totals = [0]  # the running total starts at 0 when the profiler starts
    while pending:
        event = pending.pop()
        pending.extend(event.children)
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            totals.append(event.extra_fields.total_allocated)
    return max(totals) / 2**20


def memory_probe(spec: str, args: argparse.Namespace, device: torch.device) -> None:
    """Print the peak memory of two steps of one method above the state right after set-up (MiB), by one of
    :data:`PEAK_MEASURES` (spec: ``layout,K,method,measure``)."""
    layout, num_tasks, method, field = spec.split(",")
    bench = Bench(layout, int(num_tasks), args.batch_size, args.seq_len, device, args.output_dir, args.baseline_ref,
                  fsdp=args.fsdp)
    peak = PEAK_MEASURES[field](lambda: bench.run_once(method), device)
    if not distributed() or torch.distributed.get_rank() == 0:
        print("peak", peak)


PEAK_MEASURES: dict[str, Callable[[Callable[[], None], torch.device], float]] = {
    "peak_mem_mb": peak_above_setup, "peak_tensor_mb": peak_tensors_above_setup}


def add_common_arguments(parser: argparse.ArgumentParser, output_dir: str) -> None:
    """The options both step benchmarks take (this one and ``lora_step.py``)."""
    parser.add_argument("--quick", action="store_true", help="K=2,4 only, fewer repeats, no memory probes")
    parser.add_argument("--tasks", default="2,4,8")
    parser.add_argument("--layouts", default="disjoint,shared")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no_memory", action="store_true")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--output_dir", default=output_dir)
    parser.add_argument("--_memory_probe", help=argparse.SUPPRESS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, os.path.join("outputs", "bench_step_overhead"))
    parser.add_argument("--skip_torchjd", action="store_true")
    parser.add_argument("--methods", help="comma-separated subset of the methods (plain is always timed)")
    parser.add_argument("--baseline_ref", help="also time params with the TaskGradientBuffer of this git revision")
    parser.add_argument("--fsdp", action="store_true", help="under torchrun: shard the model with FSDP2's fully_shard")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args._memory_probe:
        memory_probe(args._memory_probe, args, device)
        return
    if args.quick:
        args.tasks, args.repeats, args.no_memory, args.batch_size, args.seq_len = "2,4", 3, True, 8, 32
    rows = []
    for layout in args.layouts.split(","):
        for num_tasks in (int(k) for k in args.tasks.split(",")):
            config_rows = time_config(layout, num_tasks, args, device)
            main_process = not distributed() or torch.distributed.get_rank() == 0
            if not args.no_memory and main_process:
                peaks = peak_memory(layout, num_tasks, [row["mode"] for row in config_rows], args)
                for row in config_rows:
                    row.update(peaks[row["mode"]])
            if distributed():
                torch.distributed.barrier()
            rows.extend(config_rows)
            for row in config_rows if main_process else []:
                print(f"{row['layout']:>8} K={row['tasks']:<2} {row['mode']:<16} ratio {row['ratio_vs_plain']:>6.3f}"
                      f"  {row['step_ms']:>8.1f} ms  peak {row['peak_mem_mb']} MiB (tensors {row['peak_tensor_mb']})"
                      f"  buffer {row['buffer_mb']} MiB"
                      f"  sent {row['elements_sent']}", flush=True)
    if distributed() and torch.distributed.get_rank() != 0:
        return
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    processes = rows[0]["processes"] if rows else 1
    print(f"\nDevice: {device_name}; {processes} process(es); batch {args.batch_size} × {args.seq_len} tokens per "
          f"process; median of {args.repeats}.")
    print("| layout | K | mode | ratio vs plain | ratio vs floor | step ms | peak MiB | peak tensors MiB | buffer MiB "
          "| elements sent |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['layout']} | {row['tasks']} | {row['mode']} | {row['ratio_vs_plain']:.3f} "
              f"| {dash(row['ratio_vs_floor'])} | {row['step_ms']} | {dash(row['peak_mem_mb'])} "
              f"| {dash(row['peak_tensor_mb'])} | {dash(row['buffer_mb'])} | {dash(row['elements_sent'])} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)


def dash(value: object) -> str:
    return "-" if value is None else str(value)


if __name__ == "__main__":
    main()
