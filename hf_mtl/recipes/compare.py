"""Run a comparison spec and write its report (``hf-mtl compare CONFIG``, ``python recipes/compare.py CONFIG``).

    hf-mtl compare recipes/configs/compare_text.yaml                       # train what is missing, report
    hf-mtl compare recipes/configs/compare_text.yaml --shard 0/2 &          # two processes share the runs
    hf-mtl compare recipes/configs/compare_text.yaml --shard 1/2
    hf-mtl compare recipes/configs/compare_text.yaml --report-only          # aggregate what finished
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="compare", description=__doc__.splitlines()[0])
    parser.add_argument("config", metavar="CONFIG", help="comparison spec (YAML or JSON, see hf_mtl.compare.spec)")
    parser.add_argument("--output_dir", "--output-dir", default=None,
                        help="where runs/ and the report go (default outputs/compare/<spec name>)")
    parser.add_argument("--shard", default=None, metavar="i/n", help="train only runs j with j mod n == i")
    parser.add_argument("--report-only", "--report_only", action="store_true", help="aggregate finished runs only")
    return parser


def run(args: argparse.Namespace) -> int:
    """Train the missing runs (unless ``--report-only``), then write the report of everything finished."""
    from transformers.utils import logging as hf_logging

    from hf_mtl.compare import load_spec, parse_shard, run_comparison, write_report

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    hf_logging.set_verbosity_error()
    spec = load_spec(args.config)
    output_dir = Path(args.output_dir or Path("outputs") / "compare" / spec.name)
    if not args.report_only:
        shard = parse_shard(args.shard) if args.shard else None
        done = run_comparison(spec, output_dir, shard)
        print(f"[compare] trained {len(done.trained)}, finished before {len(done.finished_before)}, "
              f"left to other shards/processes {len(done.other_shard_or_locked)}")
    summary = write_report(spec, output_dir)
    print(f"[compare] {summary['finished_runs']} of {summary['expected_runs']} runs finished")
    for path in summary["written"]:
        print(f"wrote {path}")
    print((output_dir / "comparison.md").read_text(encoding="utf-8"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return run(args)
