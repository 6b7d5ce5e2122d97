"""Solver benchmark for the gradient combiners: wall time of one call on a K×K Gram matrix, and iterations.

Every call includes what the trainer pays: validation, the float64 NumPy conversion and the tensor returned.
Problems are random gradient systems (``J`` with a shared component and per-task scales e^[-1, 1]; half of them
with fewer dimensions than tasks, so that 0 can lie in the convex hull). For each method and K the table shows the
median time over ``problems × repeats`` calls and, for iterative solvers, the median (max) iteration count read
from ``last_info`` (over the problems that ran the solver: Nash-MTL returns at once when 0 is in the hull).

    python benchmarks/solvers.py                 # full table, K = 2..64
    python benchmarks/solvers.py --quick         # < 30 s
    python benchmarks/solvers.py --json out.json --torchjd   # also time TorchJD's weightings on the same Grams
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from hf_mtl.combiners import get_combiner

TASK_COUNTS = (2, 4, 8, 16, 32, 64)

#: (row label, registry name, options, key of last_info holding the iteration count or None)
METHODS: list[tuple[str, str, dict, str | None]] = [
    ("mgda (frank_wolfe)", "mgda", {}, "iterations"),
    ("mgda (active_set)", "mgda", {"variant": "active_set"}, None),
    ("mgda (averaged)", "mgda", {"variant": "averaged"}, "iterations"),
    ("mgda (softmax)", "mgda", {"variant": "softmax"}, "iterations"),
    ("primary_auxiliary (1 main)", "primary_auxiliary", {"primary": [0]}, None),
    ("primary_auxiliary (coordinate)", "primary_auxiliary", {"primary": [0], "solver": "coordinate"}, "iterations"),
    ("primary_auxiliary (K/2 main)", "primary_auxiliary", {"primary": "half"}, None),
    ("normalized", "normalized", {}, None),
    ("pcgrad", "pcgrad", {}, None),
    ("imtl_g", "imtl_g", {}, None),
    ("aligned_mtl", "aligned_mtl", {}, None),
    ("cagrad", "cagrad", {}, "evaluations"),
    ("upgrad", "upgrad", {}, None),
    ("nash_mtl", "nash_mtl", {}, "iterations"),
    ("gradnorm", "gradnorm", {}, None),
]
SLOW_IN_QUICK = {"mgda (averaged)", "mgda (softmax)", "primary_auxiliary (coordinate)"}


@dataclass
class Result:
    method: str
    num_tasks: int
    median_us: float
    p90_us: float
    median_iterations: float | None
    max_iterations: int | None
    converged_fraction: float | None


def problems(num_tasks: int, count: int, seed: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    grams = []
    for index in range(count):
        dim = 2 * num_tasks + 3 if index % 2 == 0 else max(1, num_tasks // 2)
        scales = np.exp(rng.uniform(-1.0, 1.0, size=(num_tasks, 1)))
        jacobian = (rng.standard_normal((num_tasks, dim)) + rng.standard_normal(dim) * rng.uniform(0, 2)) * scales
        grams.append(torch.as_tensor(jacobian @ jacobian.T))
    return grams


def time_calls(call: Callable[[torch.Tensor, torch.Tensor], object], grams, losses, repeats: int):
    times, infos = [], []
    for gram in grams:
        for _ in range(repeats):
            start = time.perf_counter()
            info = call(gram, losses)
            times.append(time.perf_counter() - start)
        infos.append(info)
    return times, infos


def run_method(label, name, options, iteration_key, num_tasks, grams, repeats) -> Result:
    if options.get("primary") == "half":
        options = {**options, "primary": list(range(max(1, num_tasks // 2)))}
    combiner = get_combiner(name, **options)
    losses = torch.ones(num_tasks, dtype=torch.float64)

    def call(gram, task_losses):
        combiner(gram, losses=task_losses)
        return dict(combiner.last_info)

    call(grams[0], losses)  # warm-up (imports, first allocation)
    times, infos = time_calls(call, grams, losses, repeats)
    iterations = [info[iteration_key] for info in infos if iteration_key in info] if iteration_key else None
    converged = [bool(info["converged"]) for info in infos if "converged" in info]
    return Result(
        method=label,
        num_tasks=num_tasks,
        median_us=statistics.median(times) * 1e6,
        p90_us=float(np.percentile(times, 90)) * 1e6,
        median_iterations=statistics.median(iterations) if iterations else None,
        max_iterations=max(iterations) if iterations else None,
        converged_fraction=sum(converged) / len(converged) if converged else None,
    )


def run_torchjd(num_tasks, grams, repeats) -> list[Result]:
    """TorchJD 0.18's Gram weightings (torch loops) on the same matrices, for comparison."""
    from torchjd import aggregation

    weightings = {
        "torchjd MGDAWeighting": aggregation.MGDAWeighting(),
        "torchjd PCGradWeighting": aggregation.PCGradWeighting(),
        "torchjd IMTLGWeighting": aggregation.IMTLGWeighting(),
        "torchjd UPGradWeighting": aggregation.UPGradWeighting(),
    }
    results = []
    for label, weighting in weightings.items():
        weighting(grams[0])
        times, _ = time_calls(lambda gram, _losses, w=weighting: w(gram), grams, None, repeats)
        results.append(Result(label, num_tasks, statistics.median(times) * 1e6, float(np.percentile(times, 90)) * 1e6,
                              None, None, None))
    return results


def format_table(results: list[Result], task_counts) -> str:
    labels = list(dict.fromkeys(r.method for r in results))
    by_key = {(r.method, r.num_tasks): r for r in results}
    header = f"{'method':34s}" + "".join(f"{'K=' + str(k):>20s}" for k in task_counts)
    lines = [header, "-" * len(header)]
    for label in labels:
        cells = []
        for k in task_counts:
            result = by_key.get((label, k))
            if result is None:
                cells.append(f"{'-':>20s}")
                continue
            cell = f"{result.median_us:8.0f} us"
            if result.median_iterations is not None:
                cell += f" ({result.median_iterations:g}/{result.max_iterations})"
            cells.append(f"{cell:>20s}")
        lines.append(f"{label:34s}" + "".join(cells))
    lines.append("median wall time per call; (median/max iterations) for iterative solvers")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer problems and repeats, skip the slow variants")
    parser.add_argument("--problems", type=int, default=None, help="random problems per K (default 20, quick 6)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per problem (default 5, quick 2)")
    parser.add_argument("--tasks", type=int, nargs="+", default=list(TASK_COUNTS), help="values of K")
    parser.add_argument("--torchjd", action="store_true", help="also time TorchJD's weightings on the same Grams")
    parser.add_argument("--json", metavar="PATH", help="write the results (and the machine) as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    count = args.problems or (6 if args.quick else 20)
    repeats = args.repeats or (2 if args.quick else 5)

    results: list[Result] = []
    for num_tasks in args.tasks:
        grams = problems(num_tasks, count, args.seed + num_tasks)
        for label, name, options, iteration_key in METHODS:
            if args.quick and label in SLOW_IN_QUICK:
                continue
            results.append(run_method(label, name, options, iteration_key, num_tasks, grams, repeats))
        if args.torchjd:
            results.extend(run_torchjd(num_tasks, grams, repeats))
    print(format_table(results, args.tasks))
    if args.json:
        payload = {
            "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                        "torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads()},
            "settings": {"problems": count, "repeats": repeats, "quick": args.quick, "seed": args.seed},
            "results": [asdict(r) for r in results],
        }
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
