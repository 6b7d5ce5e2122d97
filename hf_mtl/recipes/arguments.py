"""Command-line parsing shared by the recipes: ``HfArgumentParser`` with the recipe's own defaults and description.

``--help`` shows the values a recipe really runs with (its defaults are set on the parser, ``parser.set_defaults``,
not prepended to ``argv``), the recipe's description, and its own and the multi-task options before the
generic ``transformers.TrainingArguments`` options (moved into a group of their own at the end).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

TRAINER_GROUP = "generic Trainer options (transformers.TrainingArguments)"


class RecipeHelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written (its examples keep their lines) and every option's default."""


def recipe_parser(types: Sequence[type], defaults: Mapping[str, Any], description: str | None = None
                  ) -> HfArgumentParser:
    """``HfArgumentParser`` over ``types`` with ``defaults`` as the options' defaults; the fields that
    ``transformers.TrainingArguments`` defines are listed last, in their own group."""
    parser = HfArgumentParser(tuple(types), description=description, formatter_class=RecipeHelpFormatter,
                              usage="%(prog)s [--option VALUE ...]   (-h lists the options, the recipe's first)")
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise ValueError(f"Recipe defaults name unknown options {unknown}.")
    parser.set_defaults(**defaults)
    parser._optionals.title = "recipe and multi-task options"
    parser.epilog = "This recipe's defaults: " + ", ".join(f"{key}={value}" for key, value in defaults.items()) + "."
    generic = {field.name for field in dataclasses.fields(TrainingArguments)}
    trainer_group = parser.add_argument_group(TRAINER_GROUP)
    # argparse has no public API to move an option between help groups; the groups' action lists only shape
    # ``--help``, parsing reads ``parser._actions``.
    options = parser._optionals._group_actions
    trainer_group._group_actions.extend(a for a in options if a.dest in generic)
    options[:] = [a for a in options if a.dest not in generic]
    return parser


def parse_with_defaults(types: Sequence[type], defaults: Mapping[str, Any], argv: list[str],
                        description: str | None = None) -> tuple[Any, ...]:
    """Parse ``argv`` into ``types`` with :func:`recipe_parser`: the recipe's ``defaults`` unless ``argv`` says
    otherwise."""
    return tuple(recipe_parser(types, defaults, description).parse_args_into_dataclasses(args=argv))
