"""The ``hf-mtl`` command line: train from a config, plot a run, list the combiners.

    hf-mtl train CONFIG.yaml            # the glue_mixture recipe (hf_mtl.recipes.glue_mixture) with a config
    hf-mtl train CONFIG.yaml --resume_from_checkpoint True   # resume its newest complete checkpoint
    hf-mtl plot RUN_DIR [--out DIR]     # PNGs and the task-affinity table of a run (hf_mtl.plotting)
    hf-mtl combiners                    # registered combiner names with a one-line description
    hf-mtl compare SPEC.yaml            # single-task vs static weights vs combiners over seeds (hf_mtl.compare)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = Path(args.config)
    if not config.is_file():
        parser.error(f"config file {str(config)!r} does not exist.")
    if config.suffix.lower() not in CONFIG_SUFFIXES:
        parser.error(f"config file {str(config)!r} must end in {', '.join(CONFIG_SUFFIXES)}.")
    from hf_mtl.recipes.glue_mixture import main as run_recipe

    resume = [] if args.resume_from_checkpoint is None else ["--resume_from_checkpoint", args.resume_from_checkpoint]
    run_recipe([str(config), *resume])
    return 0


def _plot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    run = Path(args.run_dir)
    if not run.exists():
        parser.error(f"run directory {str(run)!r} does not exist.")
    from hf_mtl.plotting import affinity_markdown, plot_run

    try:
        report = plot_run(run, args.out)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    print(f"Read {report.history.source}: {len(report.history.steps)} logged steps, tasks {report.history.tasks}.")
    for path in report.written:
        print(f"wrote {path}")
    for name, reason in report.skipped.items():
        print(f"skipped {name}: {reason}")
    if report.affinity:
        print()
        print(affinity_markdown(report.affinity))
    return 0


def _combiner_classes() -> dict[str, type]:
    """Registered name → class, found among the subclasses of :class:`~hf_mtl.combiners.Combiner`."""
    from hf_mtl.combiners import Combiner, available_combiners

    names = set(available_combiners())
    found: dict[str, type] = {}
    pending = list(Combiner.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.name in names:
            found[cls.name] = cls
    missing = names - set(found)
    if missing:
        raise RuntimeError(f"Registered combiner(s) {sorted(missing)} do not subclass Combiner.")
    return dict(sorted(found.items()))


def _combiners(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    rows = []
    for name, cls in _combiner_classes().items():
        doc = (cls.__doc__ or "").strip()
        summary = doc.splitlines()[0].replace("``", "") if doc else "(no description)"
        kind = "gradient" if cls.needs_gradients else "loss"
        rows.append((name, kind + (", stateful" if cls.stateful else ""), summary))
    name_width = max(len(r[0]) for r in rows)
    kind_width = max(len(r[1]) for r in rows)
    for name, kind, summary in rows:
        print(f"{name:<{name_width}}  {kind:<{kind_width}}  {summary}")
    return 0


def _compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not Path(args.config).is_file():
        parser.error(f"config file {args.config!r} does not exist.")
    from hf_mtl.recipes.compare import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-mtl", description="Multi-task learning for HuggingFace Transformers.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="run the glue_mixture recipe with a JSON/YAML config",
                                description="Run the glue_mixture recipe (hf_mtl.recipes.glue_mixture) with the "
                                            "arguments in CONFIG (any recipe or TrainingArguments field).")
    train.add_argument("config", metavar="CONFIG", help="JSON or YAML file mapping argument names to values")
    train.add_argument("--resume_from_checkpoint", default=None, metavar="PATH|True",
                       help="resume from this checkpoint, or (True) from the newest complete one in output_dir")
    train.set_defaults(handler=_train, subparser=train)
    plot = commands.add_parser("plot", help="plot a run's diagnostics",
                               description="Write weights, per-task loss, gradient-norm, conflict and affinity "
                                           "plots of a run, and its task-affinity table.")
    plot.add_argument("run_dir", metavar="RUN_DIR",
                      help="a run's output_dir (mtl_history.jsonl, trainer_state.json or checkpoint-*/), or one "
                           "of those files")
    plot.add_argument("--out", default=None, metavar="DIR", help="where to write the plots (default RUN_DIR/plots)")
    plot.set_defaults(handler=_plot, subparser=plot)
    listing = commands.add_parser("combiners", help="list the combiners",
                                  description="Registered combiners: name, what they need, one-line description.")
    listing.set_defaults(handler=_combiners, subparser=listing)
    compare = commands.add_parser("compare", help="compare methods on a mixture over seeds (Δm, ranks, plots)",
                                  description="Train single-task baselines, static weights and combiners over "
                                              "seeds as CONFIG says (resumable), and write comparison.md/json.")
    from hf_mtl.recipes.compare import build_parser as add_compare_arguments  # argparse only: a light import

    add_compare_arguments(compare)
    compare.set_defaults(handler=_compare, subparser=compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hf-mtl`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    return args.handler(args, args.subparser)


if __name__ == "__main__":
    sys.exit(main())
