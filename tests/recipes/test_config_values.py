"""Recipe configs: values converted and checked by field type before anything loads; resume from a config or
the command line ("True" means the newest complete checkpoint)."""

from __future__ import annotations

import json

import pytest
import yaml

import hf_mtl.recipes.glue_mixture as glue_mixture
from hf_mtl.cli import main as cli_main
from hf_mtl.recipes.glue_mixture import main, parse_args


def write_config(tmp_path, **values):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values) if values else "")
    return path


def test_yaml_strings_are_converted_by_field_type(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"learning_rate: 1e-4\nmax_steps: '12'\nuse_cpu: 'yes'\nmax_examples_per_task: null\n"
                    f"sampling_temperature: 3\noutput_dir: {tmp_path / 'o'}\n")
    assert yaml.safe_load(path.read_text())["learning_rate"] == "1e-4"  # what PyYAML gives
    _, _, training_args = parse_args([str(path)])
    assert training_args.learning_rate == 1e-4 and isinstance(training_args.learning_rate, float)
    assert training_args.max_steps == 12 and training_args.use_cpu is True
    assert training_args.max_examples_per_task is None and training_args.sampling_temperature == 3.0


@pytest.mark.parametrize(("key", "value", "expected"), [("max_steps", "ten", "an integer"),
                                                        ("learning_rate", "fast", "a number"),
                                                        ("use_cpu", "maybe", "a boolean"),
                                                        ("max_steps", 2.5, "an integer"),
                                                        ("max_seq_length", [1], "an integer")])
def test_a_value_of_the_wrong_type_names_key_value_and_type(key, value, expected, tmp_path):
    path = write_config(tmp_path, **{key: value, "output_dir": str(tmp_path / "o")})
    with pytest.raises(ValueError, match=rf"{path}: key '{key}' has value .*expected {expected}"):
        parse_args([str(path)])


def test_command_line_overrides_follow_the_config_file(tmp_path):
    path = write_config(tmp_path, output_dir=str(tmp_path / "o"), max_steps=5)
    _, _, training_args = parse_args([str(path), "--resume_from_checkpoint", "True", "--max_steps=7"])
    assert training_args.resume_from_checkpoint == "True" and training_args.max_steps == 7
    with pytest.raises(ValueError, match="--max_steps needs a value"):
        parse_args([str(path), "--max_steps"])


def test_max_steps_zero_on_the_command_line_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="max_steps must be a positive number"):
        parse_args(["--max_steps", "0", "--output_dir", str(tmp_path)])


def test_cli_train_passes_resume_to_the_recipe(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(glue_mixture, "main", seen.append)
    path = write_config(tmp_path, max_steps=2)
    assert cli_main(["train", str(path), "--resume_from_checkpoint", "True"]) == 0
    assert seen == [[str(path), "--resume_from_checkpoint", "True"]]


def test_resume_from_checkpoint_true_on_the_command_line_resumes(tmp_path, tiny_encoder_dir):
    tiny = ["--model_name_or_path", tiny_encoder_dir, "--output_dir", str(tmp_path / "run"), "--use_cpu", "True",
            "--per_device_train_batch_size", "6", "--max_train_samples", "24", "--max_eval_samples", "12",
            "--max_seq_length", "32", "--disable_tqdm", "True", "--save_strategy", "steps", "--save_steps", "2"]
    main([*tiny, "--max_steps", "2"])
    main([*tiny, "--max_steps", "3", "--resume_from_checkpoint", "True"])
    state = json.loads((tmp_path / "run" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
