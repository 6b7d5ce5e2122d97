"""Compare multi-task methods on one mixture: single-task baselines, static weights and combiners over seeds.

``hf-mtl compare CONFIG`` (or ``recipes/compare.py``) expands a spec (:mod:`hf_mtl.compare.spec`) into
(method, seed) runs, trains each through ``MultiTaskTrainer`` (:mod:`hf_mtl.compare.runner`, resumable,
shardable) and aggregates them into ``comparison.json``/``comparison.md`` and PNGs with Δm against the
single-task baselines (:mod:`hf_mtl.compare.report`).
"""

from hf_mtl.compare.report import delta_m, summarise, write_report
from hf_mtl.compare.runner import parse_shard, run_comparison, shard_runs
from hf_mtl.compare.spec import ComparisonSpec, Method, Run, load_spec, parse_spec

__all__ = [
    "ComparisonSpec", "Method", "Run", "delta_m", "load_spec", "parse_shard", "parse_spec", "run_comparison",
    "shard_runs", "summarise", "write_report",
]
