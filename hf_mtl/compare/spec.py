"""The comparison spec: which mixture, which budget, which methods, which seeds — and the runs it expands to.

A spec is a YAML/JSON mapping (``recipes/configs/compare_text.yaml`` is a complete example)::

    name: compare_text
    preset: embedded_mixture            # or tasks: [rotten_tomatoes, {name: debate_party, role: main}]
    encoder: null                       # hub id or folder; null = the embedded MiniLM; or {scratch: {...}}
    max_seq_length: 64
    max_train_samples: null             # cap per task (fixed subset, data_seed)
    max_eval_samples: 200
    budget: {max_steps: 60, per_device_train_batch_size: 16, learning_rate: 1.0e-4, warmup_steps: 6}
    budget_mode: per_task               # single-task baselines: per_task | total | both
    seeds: [0, 1, 2]
    single_task: true
    linear: true
    sweep: {tasks: [rotten_tomatoes, debate_party], fractions: [0.2, 0.8]}
    combiners:
      - mgda                            # a name, or {combiner, gradient_mode, combiner_options, label}
      - {combiner: pcgrad, gradient_mode: [params, encoder_output]}
    pareto: [rotten_tomatoes, debate_party]
    training_args: {sampling_strategy: temperature, sampling_temperature: 2.0}

Budget modes of the single-task baselines (the issue's two comparisons):

* ``per_task`` — each task alone gets the whole budget (``max_steps`` × batch); the K baselines together
  cost K multi-task runs.
* ``total`` — the K baselines together cost one multi-task run: each trains ``ceil(max_steps / K)`` steps
  with the same batch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hf_mtl.compare.encoders import ScratchEncoder

BUDGET_MODES = ("per_task", "total")
SPEC_KEYS = {
    "name", "preset", "tasks", "encoder", "max_seq_length", "max_train_samples", "max_eval_samples", "data_seed",
    "budget", "budget_mode", "seeds", "single_task", "linear", "sweep", "combiners", "pareto", "training_args",
    "lower_is_better",
}
BUDGET_KEYS = {"max_steps", "per_device_train_batch_size", "learning_rate", "warmup_steps", "weight_decay"}
METHOD_KEYS = {"combiner", "gradient_mode", "combiner_options", "label"}


@dataclass(frozen=True)
class Method:
    """One trained configuration: a combiner (with options and gradient mode) on some tasks, for some steps.

    ``kind`` is ``single_task`` (one task alone), ``linear``, ``sweep`` (linear with static weights) or
    ``combiner``; ``budget_mode`` is set for single-task baselines only.
    """

    label: str
    kind: str
    combiner: str = "linear"
    gradient_mode: str = "params"
    combiner_options: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] | None = None
    max_steps: int | None = None
    budget_mode: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "kind": self.kind, "combiner": self.combiner,
                "gradient_mode": self.gradient_mode, "combiner_options": dict(self.combiner_options),
                "tasks": None if self.tasks is None else list(self.tasks), "max_steps": self.max_steps,
                "budget_mode": self.budget_mode}


@dataclass(frozen=True)
class Run:
    """One (method, seed) pair; ``run_id`` names its result file ``runs/<run_id>.json``."""

    method: Method
    seed: int

    @property
    def run_id(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in self.method.label)
        return f"{safe}__seed{self.seed}"


@dataclass
class ComparisonSpec:
    """A parsed comparison spec (see the module docstring for the file format)."""

    name: str
    task_names: list[str]
    methods: list[Method]
    seeds: list[int]
    budget: dict[str, Any]
    budget_modes: list[str]
    preset: str | None = None
    tasks: list[Any] | None = None
    encoder: str | ScratchEncoder | None = None
    max_seq_length: int = 128
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    data_seed: int = 42
    pareto: list[str] | None = None
    training_args: dict[str, Any] = field(default_factory=dict)
    lower_is_better: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def runs(self) -> list[Run]:
        """Every (method, seed), seed-major: a partial comparison holds whole seeds first."""
        return [Run(method, seed) for seed in self.seeds for method in self.methods]

    @property
    def reference_mode(self) -> str:
        """The single-task budget mode Δm ranks against: ``per_task`` when both were run."""
        return self.budget_modes[0]


def load_spec(path: str | Path, task_names: list[str] | None = None) -> ComparisonSpec:
    """Read a YAML/JSON spec file; ``task_names`` skips loading the data to learn the mixture's task names."""
    text = Path(path).read_text(encoding="utf-8")
    config = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    return parse_spec(config or {}, task_names=task_names, name=Path(path).stem)


def mixture_task_names(config: dict[str, Any]) -> list[str]:
    """Task names of the spec's mixture, in order (loads the preset's data when a preset is named)."""
    if config.get("tasks"):
        return [spec if isinstance(spec, str) else spec["name"] for spec in config["tasks"]]
    from hf_mtl.compare.data import load_source, source_tasks

    return [task.name for task in source_tasks(load_source(config.get("preset") or "embedded_mixture", None,
                                                           max_eval_samples=1))]


def _combiner_methods(entry: Any, task_names: list[str]) -> list[Method]:
    if isinstance(entry, str):
        entry = {"combiner": entry}
    if not isinstance(entry, dict) or "combiner" not in entry:
        raise ValueError(f"A combiners entry is a name or a mapping with 'combiner', got {entry!r}.")
    unknown = set(entry) - METHOD_KEYS
    if unknown:
        raise ValueError(f"Combiner entry {entry['combiner']!r}: unknown keys {sorted(unknown)}; "
                         f"allowed: {sorted(METHOD_KEYS)}.")
    modes = entry.get("gradient_mode", "params")
    modes = [modes] if isinstance(modes, str) else list(modes)
    options = dict(entry.get("combiner_options") or {})
    if "primary" in options:  # task names → indices (the trainer takes indices)
        options["primary"] = [task_names.index(p) if isinstance(p, str) else int(p) for p in options["primary"]]
    methods = []
    for mode in modes:
        label = entry.get("label") or entry["combiner"]
        if len(modes) > 1 or mode != "params":
            label = f"{label}[{mode}]"
        methods.append(Method(label=label, kind="combiner", combiner=entry["combiner"], gradient_mode=mode,
                              combiner_options=options))
    return methods


def sweep_methods(sweep: dict[str, Any], task_names: list[str]) -> list[Method]:
    """Static-weight scalarisation sweep between two tasks (Kurin et al. 2022, arXiv 2201.04122).

    Fraction ``f`` gives task a weight ``2f``, task b ``2(1 − f)`` and every other task 1, so the weights
    always sum to K as in ``linear`` (which is the point ``f = 0.5``). ``weights`` instead lists weight
    vectors directly.
    """
    if "weights" in sweep:
        vectors = [[float(w) for w in vector] for vector in sweep["weights"]]
    else:
        a, b = sweep["tasks"]
        vectors = []
        for fraction in sweep.get("fractions", [0.2, 0.8]):
            weights = np.ones(len(task_names))
            weights[task_names.index(a)], weights[task_names.index(b)] = 2 * fraction, 2 * (1 - fraction)
            vectors.append(weights.tolist())
    methods = []
    for vector in vectors:
        if len(vector) != len(task_names):
            raise ValueError(f"Sweep weights {vector} do not have one weight per task {task_names}.")
        label = "sweep(" + ",".join(f"{n}={w:g}" for n, w in zip(task_names, vector, strict=True)) + ")"
        methods.append(Method(label=label, kind="sweep", combiner_options={"weights": vector}))
    return methods


def parse_spec(config: dict[str, Any], task_names: list[str] | None = None, name: str = "comparison") -> ComparisonSpec:
    """Build a :class:`ComparisonSpec` from a mapping; unknown keys and impossible values are errors."""
    unknown = set(config) - SPEC_KEYS
    if unknown:
        raise ValueError(f"Comparison spec: unknown keys {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}.")
    if config.get("preset") and config.get("tasks"):
        raise ValueError("Comparison spec: give either 'preset' or 'tasks', not both.")
    budget = dict(config.get("budget") or {})
    bad = set(budget) - BUDGET_KEYS
    if bad:
        raise ValueError(f"Comparison spec: unknown budget keys {sorted(bad)}; allowed: {sorted(BUDGET_KEYS)}.")
    budget.setdefault("max_steps", 100)
    budget.setdefault("per_device_train_batch_size", 32)
    budget.setdefault("learning_rate", 1e-4)
    mode = config.get("budget_mode", "per_task")
    modes = list(BUDGET_MODES) if mode == "both" else [mode]
    if any(m not in BUDGET_MODES for m in modes):
        raise ValueError(f"budget_mode must be one of {BUDGET_MODES + ('both',)}, got {mode!r}.")
    names = task_names if task_names is not None else mixture_task_names(config)
    methods: list[Method] = []
    if config.get("single_task", True):
        for budget_mode in modes:
            steps = budget["max_steps"] if budget_mode == "per_task" else math.ceil(budget["max_steps"] / len(names))
            suffix = "" if len(modes) == 1 else f"[{budget_mode}]"
            methods.extend(Method(label=f"single:{task}{suffix}", kind="single_task", tasks=(task,),
                                  max_steps=steps, budget_mode=budget_mode) for task in names)
    if config.get("linear", True):
        methods.append(Method(label="linear", kind="linear"))
    if config.get("sweep"):
        methods.extend(sweep_methods(config["sweep"], names))
    for entry in config.get("combiners") or []:
        methods.extend(_combiner_methods(entry, names))
    labels = [m.label for m in methods]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"Comparison spec: methods {duplicates} appear twice; give one a 'label'.")
    pareto = config.get("pareto")
    if pareto is not None and (len(pareto) != 2 or any(p not in names for p in pareto)):
        raise ValueError(f"pareto must name two of the tasks {names}, got {pareto!r}.")
    seeds = [int(s) for s in config.get("seeds", [0, 1, 2])]
    encoder = config.get("encoder")
    if encoder is not None and not isinstance(encoder, str):
        encoder = ScratchEncoder.from_spec(encoder)
    return ComparisonSpec(
        name=config.get("name", name), task_names=names, methods=methods, seeds=seeds, budget=budget,
        budget_modes=modes, preset=config.get("preset"), tasks=config.get("tasks"), encoder=encoder,
        max_seq_length=int(config.get("max_seq_length", 128)), max_train_samples=config.get("max_train_samples"),
        max_eval_samples=config.get("max_eval_samples"), data_seed=int(config.get("data_seed", 42)), pareto=pareto,
        training_args=dict(config.get("training_args") or {}), lower_is_better=list(config.get("lower_is_better") or []),
        raw=dict(config),
    )
