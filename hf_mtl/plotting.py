"""Plots and a task-affinity summary of a multi-task run, read from its logs.

A run directory is read through :func:`load_run`: ``mtl_history.jsonl`` (written by
:class:`~hf_mtl.callbacks.MultiTaskDiagnosticsCallback`) when present, otherwise ``trainer_state.json``
in the directory or in its newest ``checkpoint-*`` folder (its ``log_history`` carries the same keys).
:func:`plot_run` writes PNGs (matplotlib figures rendered by the Agg canvas; pyplot and the global
backend are left alone) and ``affinity.md``/``affinity.csv``.

Affinity is read off the Gram matrices ``G_ij = <g_i, g_j>`` logged during training. To first order, a
step ``-η g_j`` changes task ``i``'s loss by ``-η G_ij``: positive cosines mean the tasks help each
other, negative ones that they conflict (docs/diagnostics.md). The *transfer* ``T_ij = G_ij / G_ii = cos_ij ‖g_j‖/‖g_i‖``
compares that change with the one task ``i``'s own step ``-η g_i`` would give (``-η G_ii``): ``T_ij = 0.5``
means a step on task ``j`` lowers task ``i``'s loss half as much as a step on ``i`` itself; ``T_ij < 0``
that it raises it (the first-order form of lookahead task affinity, Fifty et al. 2021).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_mtl.callbacks import HISTORY_FILE, read_history, records_from_log_history

TRAINER_STATE_FILE = "trainer_state.json"
#: A pair "helps" (or "hurts") when its cosine is positive (negative) on at least this fraction of steps.
CONSISTENT_FRACTION = 2 / 3
DPI = 100


@dataclass
class RunHistory:
    """Per-step diagnostics of one run as arrays over logged training steps (``NaN`` where not logged).

    ``loss``, ``weight``, ``grad_norm``: ``(n, K)``; ``cosine``: ``(n, K, K)``; ``eval_loss``: ``(m, K)``
    per-task evaluation losses at ``eval_steps``.
    """

    tasks: list[str]
    steps: np.ndarray
    loss: np.ndarray
    weight: np.ndarray
    grad_norm: np.ndarray
    cosine: np.ndarray
    eval_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    eval_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    source: str = ""

    @property
    def has_weights(self) -> bool:
        return bool(np.isfinite(self.weight).any())

    @property
    def has_gram(self) -> bool:
        return bool(np.isfinite(self.grad_norm).any())


def _per_task_array(record: dict[str, Any], key: str, tasks: Sequence[str]) -> list[float]:
    values = record.get(key) or {}
    return [math.nan if values.get(name) is None else float(values[name]) for name in tasks]


def history_from_records(records: Sequence[dict[str, Any]], source: str = "") -> RunHistory:
    """Arrays from history records; a later record for the same step replaces an earlier one."""
    train = {r["step"]: r for r in records if r["kind"] == "train"}
    if not train:
        raise ValueError(
            f"{source or 'the logs'}: no training step carries per-task keys (loss_<task>, ...); was the run "
            "trained by MultiTaskTrainer with logging_steps > 0 and at least one logging step?"
        )
    ordered = [train[step] for step in sorted(train)]
    tasks = list(ordered[0]["tasks"])
    for record in ordered:
        if list(record["tasks"]) != tasks:
            raise ValueError(f"{source}: step {record['step']} logs tasks {record['tasks']}, earlier steps {tasks}.")
    k = len(tasks)
    cosine = np.full((len(ordered), k, k), np.nan)
    for n, record in enumerate(ordered):
        if record.get("cosine") is not None:
            cosine[n] = np.array([[math.nan if v is None else v for v in row] for row in record["cosine"]], float)
    evals = {r["step"]: r for r in records if r["kind"] == "eval"}
    eval_steps = sorted(s for s, r in evals.items() if any(f"eval_{t}_loss" in r["metrics"] for t in tasks))
    eval_loss = np.array([[math.nan if evals[s]["metrics"].get(f"eval_{t}_loss") is None
                           else evals[s]["metrics"][f"eval_{t}_loss"] for t in tasks] for s in eval_steps], float)
    return RunHistory(
        tasks=tasks,
        steps=np.array([r["step"] for r in ordered], dtype=int),
        loss=np.array([_per_task_array(r, "loss", tasks) for r in ordered], float),
        weight=np.array([_per_task_array(r, "weight", tasks) for r in ordered], float),
        grad_norm=np.array([_per_task_array(r, "grad_norm", tasks) for r in ordered], float),
        cosine=cosine,
        eval_steps=np.array(eval_steps, dtype=int),
        eval_loss=eval_loss.reshape(len(eval_steps), k),
        source=source,
    )


def _newest_checkpoint_state(run_dir: Path) -> Path | None:
    checkpoints = []
    for child in run_dir.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and (child / TRAINER_STATE_FILE).is_file():
            checkpoints.append((int(match.group(1)), child / TRAINER_STATE_FILE))
    return max(checkpoints)[1] if checkpoints else None


def find_log_file(run: str | os.PathLike) -> Path:
    """The file :func:`load_run` reads for ``run`` (a run directory, or a history/state file itself)."""
    path = Path(run)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"Run directory {str(path)!r} does not exist.")
    for candidate in (path / HISTORY_FILE, path / TRAINER_STATE_FILE):
        if candidate.is_file():
            return candidate
    state = _newest_checkpoint_state(path)
    if state is None:
        raise FileNotFoundError(
            f"{str(path)!r} holds no {HISTORY_FILE}, {TRAINER_STATE_FILE} or checkpoint-*/{TRAINER_STATE_FILE}; "
            "train with MultiTaskDiagnosticsCallback (the recipe adds it) or save checkpoints/state."
        )
    return state


def load_run(run: str | os.PathLike) -> RunHistory:
    """The diagnostics of a run directory (or of a ``mtl_history.jsonl`` / ``trainer_state.json`` file)."""
    path = find_log_file(run)
    if path.suffix == ".jsonl":
        records = read_history(path)
    else:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}).") from None
        if not isinstance(state, dict) or "log_history" not in state:
            raise ValueError(f"{path}: expected a trainer_state.json with a 'log_history' list.")
        records = records_from_log_history(state["log_history"])
    return history_from_records(records, source=str(path))


# --- affinity -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairAffinity:
    """How two tasks' gradients related over the logged steps (see the module docstring).

    ``transfer_a_from_b`` is the median over steps of ``T_ab = G_ab / G_aa``: the first-order change of
    task ``a``'s loss under a step on task ``b``, relative to a step on ``a`` itself.
    """

    task_a: str
    task_b: str
    steps: int
    mean_cosine: float
    last_cosine: float
    conflict_fraction: float
    transfer_a_from_b: float
    transfer_b_from_a: float
    verdict: str


def _verdict(cosines: np.ndarray) -> str:
    if len(cosines) == 0:
        return "undefined"
    if not np.any(cosines):
        return "orthogonal"
    if np.mean(cosines > 0) >= CONSISTENT_FRACTION:
        return "helps"
    if np.mean(cosines < 0) >= CONSISTENT_FRACTION:
        return "hurts"
    return "mixed"


def transfer_matrix(history: RunHistory) -> np.ndarray:
    """Median over logged steps of ``T_ij = cos_ij ‖g_j‖ / ‖g_i‖`` (``NaN`` where never defined)."""
    norms = history.grad_norm
    with np.errstate(divide="ignore", invalid="ignore"):
        per_step = history.cosine * norms[:, None, :] / norms[:, :, None]
    per_step[~np.isfinite(per_step)] = np.nan
    k = len(history.tasks)
    out = np.full((k, k), np.nan)
    for i in range(k):
        for j in range(k):
            values = per_step[:, i, j][~np.isnan(per_step[:, i, j])]
            if len(values):
                out[i, j] = float(np.median(values))
    return out


def mean_cosine(history: RunHistory) -> np.ndarray:
    """Mean over logged steps of each cosine (``NaN`` where never defined)."""
    defined = ~np.isnan(history.cosine)
    counts = defined.sum(axis=0)
    sums = np.where(defined, history.cosine, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def conflict_fraction(history: RunHistory) -> np.ndarray:
    """Fraction of the logged steps with a defined cosine at which it was negative."""
    defined = ~np.isnan(history.cosine)
    counts = defined.sum(axis=0)
    conflicts = (np.where(defined, history.cosine, 0.0) < 0).sum(axis=0)
    return np.where(counts > 0, conflicts / np.maximum(counts, 1), np.nan)


def affinity_summary(history: RunHistory) -> list[PairAffinity]:
    """One :class:`PairAffinity` per task pair, most conflicting (lowest mean cosine) first."""
    if not history.has_gram:
        raise ValueError(
            f"{history.source}: no Gram diagnostics (grad_norm_<task>, cosine_<a>__<b>) were logged; the "
            "combiner is loss-based, so per-task gradients were never formed."
        )
    transfer = transfer_matrix(history)
    pairs = []
    k = len(history.tasks)
    for i in range(k):
        for j in range(i + 1, k):
            series = history.cosine[:, i, j]
            defined = series[~np.isnan(series)]
            pairs.append(PairAffinity(
                task_a=history.tasks[i], task_b=history.tasks[j], steps=len(defined),
                mean_cosine=float(defined.mean()) if len(defined) else math.nan,
                last_cosine=float(defined[-1]) if len(defined) else math.nan,
                conflict_fraction=float(np.mean(defined < 0)) if len(defined) else math.nan,
                transfer_a_from_b=float(transfer[i, j]), transfer_b_from_a=float(transfer[j, i]),
                verdict=_verdict(defined),
            ))
    return sorted(pairs, key=lambda p: (math.isnan(p.mean_cosine), p.mean_cosine))


AFFINITY_COLUMNS = ("task_a", "task_b", "steps", "mean_cosine", "last_cosine", "conflict_fraction",
                    "transfer_a_from_b", "transfer_b_from_a", "verdict")


def affinity_markdown(pairs: Sequence[PairAffinity]) -> str:
    """The affinity table in Markdown."""
    lines = ["| task a | task b | steps | mean cos | last cos | in conflict | T(a←b) | T(b←a) | verdict |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for p in pairs:
        lines.append(f"| {p.task_a} | {p.task_b} | {p.steps} | {p.mean_cosine:+.4f} | {p.last_cosine:+.4f} | "
                     f"{p.conflict_fraction:.0%} | {p.transfer_a_from_b:+.3f} | {p.transfer_b_from_a:+.3f} | "
                     f"{p.verdict} |")
    return "\n".join(lines)


# --- figures --------------------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure  # Figure renders with the Agg canvas; pyplot is never touched
    except ImportError:
        raise ImportError("hf_mtl.plotting draws with matplotlib: pip install 'hf_mtl[recipes]'.") from None

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _line_style(n_points: int) -> dict[str, Any]:
    return {"marker": "o", "markersize": 3} if n_points <= 40 else {}


def _integer_steps(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def weights_figure(history: RunHistory) -> Any:
    """Combiner weights ``w_k`` at each logging step, one line per task. Weights that never change (a static
    combiner such as ``linear``) are said so in the title and legend, and drawn with distinct line styles so that
    equal weights lying on top of each other stay visible."""
    fig = _figure(8, 3.8)
    ax = fig.add_subplot()
    weights = history.weight
    static = bool(np.all(np.nanmax(weights, axis=0) - np.nanmin(weights, axis=0) <= 1e-9))
    styles = ["-", "--", ":", "-."]
    for k, name in enumerate(history.tasks):
        style = {"linestyle": styles[k % len(styles)], "linewidth": 2.5 - 0.4 * (k % len(styles))} if static else {}
        label = f"{name} (static, {weights[0, k]:.3g})" if static else name
        ax.plot(history.steps, weights[:, k], label=label, **_line_style(len(history.steps)), **style)
    title = "Combiner weights (last step of each logging interval)"
    ax.set(xlabel="optimizer step", ylabel="weight $w_k$",
           title="Static combiner weights: constant over the run" if static else title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    _integer_steps(ax)
    return fig


def plot_weights(history: RunHistory, path: str | os.PathLike) -> Path:
    """:func:`weights_figure` saved to ``path``."""
    weights_figure(history).savefig(path)
    return Path(path)


def _plain_log_labels(ax: Any) -> None:
    """Log-scale tick labels as plain numbers (0.5, 2, 40) rather than 5×10⁻¹."""
    from matplotlib.ticker import LogFormatter

    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _grid(k: int) -> tuple[int, int]:
    cols = min(k, 3)
    return math.ceil(k / cols), cols


def plot_losses(history: RunHistory, path: str | os.PathLike) -> Path:
    """One panel per task: mean training loss per logging interval, and evaluation loss where logged."""
    rows, cols = _grid(len(history.tasks))
    fig = _figure(3.3 * cols, 2.6 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    for k, name in enumerate(history.tasks):
        ax = axes[k // cols][k % cols]
        ax.plot(history.steps, history.loss[:, k], color="C0", label="train", **_line_style(len(history.steps)))
        if len(history.eval_steps) and np.isfinite(history.eval_loss[:, k]).any():
            ax.plot(history.eval_steps, history.eval_loss[:, k], "s--", color="C3", markersize=5, label="eval")
        ax.set_title(name, fontsize="medium")
        ax.grid(alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel("loss")
        if k // cols == rows - 1:
            ax.set_xlabel("optimizer step")
        ax.legend(fontsize="x-small")
        _integer_steps(ax)
    for k in range(len(history.tasks), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.suptitle("Per-task loss")
    fig.savefig(path)
    return Path(path)


def plot_grad_norms(history: RunHistory, path: str | os.PathLike) -> Path:
    """Per-task gradient norms ``‖g_k‖ = √G_kk`` on a log scale."""
    fig = _figure(8, 3.8)
    ax = fig.add_subplot()
    for k, name in enumerate(history.tasks):
        ax.plot(history.steps, history.grad_norm[:, k], label=name, **_line_style(len(history.steps)))
    ax.set_yscale("log")
    _plain_log_labels(ax)
    ax.set(xlabel="optimizer step", ylabel=r"$\|g_k\| = \sqrt{G_{kk}}$", title="Per-task gradient norms")
    ax.grid(alpha=0.3, which="major")
    ax.grid(alpha=0.1, which="minor")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    _integer_steps(ax)
    fig.savefig(path)
    return Path(path)


def _heatmap(ax: Any, matrix: np.ndarray, tasks: Sequence[str], cmap: str, vmin: float, vmax: float,
             fmt: str, mask_diagonal: bool = True) -> Any:
    import matplotlib

    shown = matrix.astype(float).copy()
    if mask_diagonal:
        np.fill_diagonal(shown, np.nan)
    image = ax.imshow(shown, cmap=matplotlib.colormaps[cmap].with_extremes(bad="#e6e6e6"), vmin=vmin, vmax=vmax)
    k = len(tasks)
    ax.set_xticks(range(k), tasks, rotation=30, ha="right", fontsize="small")
    ax.set_yticks(range(k), tasks, fontsize="small")
    for i in range(k):
        for j in range(k):
            if mask_diagonal and i == j:
                continue
            value = shown[i, j]
            text = "n/a" if np.isnan(value) else format(value, fmt)
            red, green, blue, _ = image.cmap(image.norm(value)) if not np.isnan(value) else (1, 1, 1, 1)
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # ITU-R BT.601 luma
            ax.text(j, i, text, ha="center", va="center", fontsize="small", color="white" if dark else "black")
    return image


def _symmetric_limit(*matrices: np.ndarray) -> float:
    values = []
    for matrix in matrices:
        off = matrix[~np.eye(len(matrix), dtype=bool)]
        values.extend(np.abs(off[np.isfinite(off)]).tolist())
    return max(max(values, default=0.0), 1e-3)


#: Cosines lie in [-1, 1]; a fixed symmetric scale keeps a ±0.01 cosine pale instead of saturated.
COSINE_LIMITS = (-1.0, 1.0)


def conflict_figure(history: RunHistory) -> Any:
    """Cosine heatmaps: mean over the logged steps, and the last logged step, on the fixed scale
    :data:`COSINE_LIMITS` (white = orthogonal, red = conflict, blue = agreement)."""
    mean = mean_cosine(history)
    defined_steps = np.flatnonzero(np.isfinite(history.cosine).any(axis=(1, 2)))
    last = history.cosine[defined_steps[-1]] if len(defined_steps) else np.full_like(mean, np.nan)
    last_step = int(history.steps[defined_steps[-1]]) if len(defined_steps) else None
    k = len(history.tasks)
    side = 1.2 + 0.9 * k
    fig = _figure(2 * side + 1.0, side + 0.4)
    left, right = fig.subplots(1, 2)
    _heatmap(left, mean, history.tasks, "RdBu", *COSINE_LIMITS, "+.3f")
    left.set_title(f"mean over {len(defined_steps)} logged steps", fontsize="medium")
    image = _heatmap(right, last, history.tasks, "RdBu", *COSINE_LIMITS, "+.3f")
    right.set_title(f"last logged step ({last_step})", fontsize="medium")
    fig.colorbar(image, ax=[left, right], shrink=0.8, label="cosine (red: conflict)")
    fig.suptitle("Gradient cosines between tasks")
    return fig


def plot_conflict(history: RunHistory, path: str | os.PathLike) -> Path:
    """:func:`conflict_figure` saved to ``path``."""
    conflict_figure(history).savefig(path)
    return Path(path)


def plot_affinity(history: RunHistory, path: str | os.PathLike) -> Path:
    """Fraction of steps in conflict (symmetric) and median transfer ``T_ij`` (row ``i`` ← column ``j``)."""
    fraction = conflict_fraction(history)
    transfer = transfer_matrix(history)
    k = len(history.tasks)
    side = 1.2 + 0.9 * k
    fig = _figure(2 * side + 2.0, side + 0.6)
    left, right = fig.subplots(1, 2)
    image = _heatmap(left, fraction, history.tasks, "Reds", 0.0, 1.0, ".0%")
    fig.colorbar(image, ax=left, shrink=0.8, label="fraction of steps with cos < 0")
    left.set_title("steps in conflict", fontsize="medium")
    limit = _symmetric_limit(transfer)
    image = _heatmap(right, transfer, history.tasks, "RdBu", -limit, limit, "+.3f")
    fig.colorbar(image, ax=right, shrink=0.8, label="median $G_{ij}/G_{ii}$ (red: hurts)")
    right.set_title("transfer $T_{ij}$: column j's step\non row i's loss, vs i's own step", fontsize="medium")
    fig.suptitle("Task affinity")
    fig.savefig(path)
    return Path(path)


@dataclass
class PlotReport:
    """What :func:`plot_run` wrote, and what it skipped and why."""

    history: RunHistory
    written: list[Path]
    skipped: dict[str, str]
    affinity: list[PairAffinity]


def write_affinity_tables(pairs: Sequence[PairAffinity], out_dir: Path) -> list[Path]:
    """``affinity.md`` (Markdown) and ``affinity.csv`` (one row per pair)."""
    markdown = out_dir / "affinity.md"
    markdown.write_text(affinity_markdown(pairs) + "\n", encoding="utf-8")
    table = out_dir / "affinity.csv"
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(AFFINITY_COLUMNS)
        for p in pairs:
            writer.writerow([getattr(p, column) for column in AFFINITY_COLUMNS])
    return [markdown, table]


def plot_run(run: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> PlotReport:
    """Write every plot that the run's logs support to ``out_dir`` (default ``<run>/plots``).

    Always ``losses.png``; ``weights.png`` when weights were logged; ``grad_norms.png``, ``conflict.png``,
    ``affinity.png``, ``affinity.md`` and ``affinity.csv`` when a gradient combiner logged its Gram.
    """
    history = load_run(run)
    base = Path(run) if Path(run).is_dir() else Path(run).parent
    target = Path(out_dir) if out_dir is not None else base / "plots"
    target.mkdir(parents=True, exist_ok=True)
    written = [plot_losses(history, target / "losses.png")]
    skipped: dict[str, str] = {}
    if history.has_weights:
        written.append(plot_weights(history, target / "weights.png"))
    else:
        skipped["weights.png"] = "no weight_<task> keys were logged"
    pairs: list[PairAffinity] = []
    gram_plots = ("grad_norms.png", "conflict.png", "affinity.png")
    if not history.has_gram:
        skipped.update(dict.fromkeys(gram_plots, "loss-based combiner: no Gram matrix was logged"))
    else:
        written.append(plot_grad_norms(history, target / "grad_norms.png"))
        if len(history.tasks) < 2:
            skipped.update(dict.fromkeys(gram_plots[1:], "a single task has no pairs"))
        else:
            pairs = affinity_summary(history)
            written.append(plot_conflict(history, target / "conflict.png"))
            written.append(plot_affinity(history, target / "affinity.png"))
            written.extend(write_affinity_tables(pairs, target))
    return PlotReport(history=history, written=written, skipped=skipped, affinity=pairs)
