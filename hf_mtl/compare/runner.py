"""Train every (method, seed) run of a comparison through the public API, one JSON per finished run.

A finished run (``runs/<run_id>.json``) is never repeated, so an interrupted comparison resumes where it
stopped. Runs can be spread over processes with ``shard=(i, n)`` (run j goes to shard ``j mod n``) and/or
by starting several processes on the same output directory: each run is claimed with a lock file
(``runs/<run_id>.lock``, holding the claiming process id; a lock whose process is gone is taken over).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_mtl.compare.data import Source, load_source, restrict_source, source_tasks
from hf_mtl.compare.encoders import ScratchEncoder
from hf_mtl.compare.spec import ComparisonSpec, Run
from hf_mtl.data.sources import SharedInputData

logger = logging.getLogger(__name__)

RUNS_DIR = "runs"


@dataclass
class RunnerReport:
    """What one call of :func:`run_comparison` did: run ids trained, skipped as finished, left to others."""

    trained: list[str] = field(default_factory=list)
    finished_before: list[str] = field(default_factory=list)
    other_shard_or_locked: list[str] = field(default_factory=list)


def run_path(output_dir: str | Path, run: Run) -> Path:
    return Path(output_dir) / RUNS_DIR / f"{run.run_id}.json"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``0 ≤ i < n``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/2), got {text!r}.") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: need 0 <= i < n.")
    return index, count


def shard_runs(runs: list[Run], shard: tuple[int, int] | None) -> list[Run]:
    """The runs of shard ``(i, n)``: every n-th run starting at i (all runs without a shard)."""
    if shard is None:
        return list(runs)
    index, count = shard
    return runs[index::count]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(lock: Path) -> bool:
    """Create ``lock`` atomically with our pid; take over a lock whose process on this host is gone."""
    owner = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                host, pid = lock.read_text(encoding="utf-8").split()
            except (FileNotFoundError, ValueError):
                return False
            if host != socket.gethostname() or _process_alive(int(pid)):
                return False
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(owner)
        return True
    return False


def training_texts(source: Source) -> list[str]:
    """Every training text of the mixture (``text`` and, where present, ``text_pair``), task by task."""
    splits = [source.train] if isinstance(source, SharedInputData) else [item.train for item in source]
    return [text for split in splits for column in ("text", "text_pair") if column in split.column_names
            for text in split[column] if text is not None]


class _DataCache:
    """The mixture loaded, the tokenizer made and each task subset tokenised once per process."""

    def __init__(self, spec: ComparisonSpec) -> None:
        from transformers import AutoTokenizer

        from hf_mtl.data.embedded import embedded_encoder_path

        self.spec = spec
        self.source: Source = load_source(spec.preset, spec.tasks, max_train_samples=spec.max_train_samples,
                                          max_eval_samples=spec.max_eval_samples, seed=spec.data_seed)
        self.encoder_config: Any = None
        if isinstance(spec.encoder, ScratchEncoder):
            self.encoder = None
            self.tokenizer = spec.encoder.build_tokenizer(training_texts(self.source), spec.max_seq_length)
            self.encoder_config = spec.encoder.encoder_config(self.tokenizer, spec.max_seq_length)
        else:
            self.encoder = spec.encoder or embedded_encoder_path()
            self.tokenizer = AutoTokenizer.from_pretrained(self.encoder)
        self.prepared: dict[tuple[str, ...] | None, Any] = {}

    def model(self, tasks: list[Any]) -> Any:
        """A fresh model: pretrained encoder weights, or (scratch) weights drawn from the current seed."""
        from hf_mtl import MultiTaskModel
        from hf_mtl.modeling import MultiTaskConfig, special_token_ids

        if self.encoder_config is None:
            return MultiTaskModel.from_encoder(self.encoder, tasks)
        return MultiTaskModel(MultiTaskConfig(encoder_config=self.encoder_config, tasks=list(tasks),
                                              **special_token_ids(self.tokenizer)))

    def data(self, tasks: tuple[str, ...] | None) -> Any:
        from hf_mtl.data import prepare_datasets

        if tasks not in self.prepared:
            self.prepared[tasks] = prepare_datasets(restrict_source(self.source, tasks), self.tokenizer,
                                                    self.spec.max_seq_length)
        return self.prepared[tasks]


def _step_recorder() -> Any:
    from transformers import TrainerCallback

    class StepRecorder(TrainerCallback):
        """Wall time of every optimizer step, and the step's task weights and gradient norms (``last_step``)."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self.weights: list[np.ndarray] = []
            self.grad_norms: list[np.ndarray] = []
            self.trainer: Any = None
            self._start = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.times.append(time.perf_counter() - self._start)
            record = self.trainer.last_step
            if record is not None and record.weights is not None and not record.skipped:
                self.weights.append(np.asarray(record.weights, dtype=float))
                if record.gram is not None:
                    self.grad_norms.append(np.sqrt(np.clip(np.diag(np.asarray(record.gram, dtype=float)), 0, None)))

        def summary(self, names: list[str]) -> dict[str, Any]:
            def mean_of(rows: list[np.ndarray]) -> dict[str, float] | None:
                return dict(zip(names, np.mean(rows, axis=0).tolist(), strict=True)) if rows else None

            return {"mean_step_time_s": float(np.mean(self.times)) if self.times else None,
                    "mean_weights": mean_of(self.weights), "mean_grad_norms": mean_of(self.grad_norms)}

    return StepRecorder()


def train_run(spec: ComparisonSpec, run: Run, cache: _DataCache, work_dir: Path) -> dict[str, Any]:
    """Train and evaluate one run with ``MultiTaskTrainer``; the result record written to ``runs/``."""
    import torch
    from transformers import set_seed

    from hf_mtl import MultiTaskTrainer, MultiTaskTrainingArguments

    method = run.method
    start = time.time()
    set_seed(run.seed)
    data = cache.data(method.tasks)
    model = cache.model(data.tasks)
    arguments = {
        "output_dir": str(work_dir), "save_strategy": "no", "eval_strategy": "no", "report_to": "none",
        "logging_steps": 10**9, "disable_tqdm": True, **spec.training_args,
        **spec.budget, "seed": run.seed, "combiner": method.combiner, "gradient_mode": method.gradient_mode,
        "combiner_options": dict(method.combiner_options),
    }
    if method.max_steps is not None:
        arguments["max_steps"] = method.max_steps
    args = MultiTaskTrainingArguments(**arguments)
    recorder = _step_recorder()
    trainer = MultiTaskTrainer(model, args, train_dataset=data.train, eval_dataset=data.validation,
                               processing_class=cache.tokenizer, callbacks=[recorder])
    recorder.trainer = trainer
    trainer.train()
    train_time = time.time() - start
    metrics = trainer.evaluate()
    tasks = source_tasks(restrict_source(cache.source, method.tasks))
    per_task = {t.name: {m: metrics[f"eval_{t.name}_{m}"] for m in t.metrics if f"eval_{t.name}_{m}" in metrics}
                for t in tasks}
    return {
        "run_id": run.run_id, "method": method.to_dict(), "seed": run.seed, "tasks": [t.name for t in tasks],
        "headline_metric": {t.name: t.metrics[0] for t in tasks}, "metrics": per_task,
        "eval": {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        "max_steps": args.max_steps, "per_device_train_batch_size": args.per_device_train_batch_size,
        "learning_rate": args.learning_rate, "train_time_s": train_time, "wall_time_s": time.time() - start,
        **recorder.summary(trainer.task_names),
        "host": platform.node(), "torch_threads": torch.get_num_threads(),
        "device": str(args.device), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def run_comparison(spec: ComparisonSpec, output_dir: str | Path, shard: tuple[int, int] | None = None) -> RunnerReport:
    """Train every run of ``spec`` (of this shard) that has no result yet; print progress with an ETA."""
    import tempfile

    out = Path(output_dir)
    (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec.raw, indent=2, default=str) + "\n", encoding="utf-8")
    report = RunnerReport()
    all_runs = spec.runs()
    mine = shard_runs(all_runs, shard)
    report.other_shard_or_locked = [r.run_id for r in all_runs if r not in mine]
    todo = []
    for run in mine:
        (report.finished_before if run_path(out, run).exists() else todo).append(run)
    for run_id in report.finished_before:
        print(f"[compare] {run_id}: finished before, skipped", flush=True)
    cache: _DataCache | None = None
    started = time.time()
    for done, run in enumerate(todo):
        lock = run_path(out, run).with_suffix(".lock")
        if run_path(out, run).exists() or not _claim(lock):
            report.other_shard_or_locked.append(run.run_id)
            print(f"[compare] {run.run_id}: finished or claimed by another process, skipped", flush=True)
            continue
        try:
            cache = cache or _DataCache(spec)
            elapsed = time.time() - started
            eta = f", ETA {elapsed / done * (len(todo) - done) / 60:.1f} min" if done else ""
            print(f"[compare] run {done + 1}/{len(todo)} ({len(all_runs)} in the spec): {run.run_id}{eta}", flush=True)
            with tempfile.TemporaryDirectory(prefix=f"{run.run_id}-", dir=out) as work_dir:
                record = train_run(spec, run, cache, Path(work_dir))
            partial = run_path(out, run).with_suffix(".json.tmp")
            partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            os.replace(partial, run_path(out, run))
            report.trained.append(run.run_id)
            headline = ", ".join(f"{t}={record['metrics'][t][m]:.4f}" for t, m in record["headline_metric"].items())
            print(f"[compare] {run.run_id}: {headline} ({record['wall_time_s']:.0f} s)", flush=True)
        finally:
            lock.unlink(missing_ok=True)
    return report
