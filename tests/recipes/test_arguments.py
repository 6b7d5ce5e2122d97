"""Recipe command lines: the recipe's real defaults in --help, its own options first, a description."""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hf_mtl.recipes import glue_mixture
from hf_mtl.recipes.arguments import TRAINER_GROUP, parse_with_defaults, recipe_parser

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Options:
    rate: float = 0.1
    name: str = "a"


def test_command_line_overrides_the_recipe_defaults():
    (options,) = parse_with_defaults([Options], {"rate": 0.4, "name": "b"}, ["--rate", "0.2"])
    assert (options.rate, options.name) == (0.2, "b")
    (options,) = parse_with_defaults([Options], {"rate": 0.4}, [])
    assert (options.rate, options.name) == (0.4, "a")


def test_a_default_for_an_unknown_option_is_an_error():
    with pytest.raises(ValueError, match="unknown options"):
        recipe_parser([Options], {"rtae": 0.4})


def help_text(run, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        run(["--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def default_of(text: str, option: str) -> str:
    """The ``(default: ...)`` printed in ``--option``'s entry (wrapped lines joined)."""
    entry = re.search(rf"^  --{option} .*?(?=^  -|^\S|\Z)", text, re.MULTILINE | re.DOTALL)
    assert entry, option
    match = re.search(r".*\(default: (.*?)\)\s*$", re.sub(r"\s+", " ", entry.group(0)))
    assert match, option
    return match.group(1)


def test_glue_mixture_help_shows_the_recipe_defaults_and_its_options_first(capsys):
    text = help_text(glue_mixture.main, capsys)
    assert text.splitlines()[2].startswith("Fine-tune one encoder on a mixture of text tasks")
    for option, value in [("per_device_train_batch_size", "32"), ("learning_rate", "0.0001"), ("max_steps", "200"),
                          ("sampling_strategy", "temperature"), ("output_dir", "outputs/glue_mixture"),
                          ("combiner", "linear"), ("max_seq_length", "128")]:
        assert default_of(text, option) == value, option
    position = {name: re.search(rf"^  --{name} ", text, re.MULTILINE).start() for name in ("tasks", "task_specs", "combiner", "gradient_mode",
                                                               "max_steps", "adam_beta1")}
    assert position["tasks"] < position["task_specs"] < position["combiner"] < position["gradient_mode"]
    assert position["gradient_mode"] < text.index(TRAINER_GROUP) < position["max_steps"] < position["adam_beta1"]
    assert len(text.split(TRAINER_GROUP)[0].splitlines()) < 160  # the recipe's part fits on a few screens


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_help_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["noisy_labels", "noisy_nmt"])
def test_noisy_recipes_help_shows_their_defaults(name, capsys):
    recipe = load_recipe(name)
    text = help_text(recipe.parse_args, capsys)
    assert recipe.__doc__.splitlines()[0] in text
    for option, value in recipe.DEFAULTS.items():
        assert default_of(text, option) == str(value), option
    assert re.search(r"^  --methods ", text, re.MULTILINE).start() < text.index(TRAINER_GROUP)
