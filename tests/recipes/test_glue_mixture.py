"""The glue_mixture recipe: configs, user files, GLUE local files, end to end on a tiny encoder."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hf_mtl.recipes.glue_mixture import main, parse_args

TINY = ["--max_steps", "2", "--per_device_train_batch_size", "6", "--per_device_eval_batch_size", "16",
        "--max_train_samples", "24", "--max_eval_samples", "12", "--logging_steps", "1", "--use_cpu", "True",
        "--max_seq_length", "32", "--disable_tqdm", "True"]


def test_config_with_unknown_key_names_it(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("combiner: mgda\nlearning_rte: 0.1\noutput_dir: x\n")
    with pytest.raises(ValueError, match="learning_rte"):
        parse_args([str(config)])


def test_config_file_sets_training_arguments(tmp_path):
    config = tmp_path / "good.json"
    config.write_text(json.dumps({"combiner": "pcgrad", "gradient_mode": "encoder_output", "max_steps": 7,
                                  "output_dir": str(tmp_path / "o"), "tasks": "rotten_tomatoes"}))
    model_args, data_args, training_args = parse_args([str(config)])
    assert training_args.combiner == "pcgrad" and training_args.gradient_mode == "encoder_output"
    assert training_args.max_steps == 7 and data_args.tasks == "rotten_tomatoes"


def test_unknown_task_name_lists_known_ones(tmp_path, tiny_encoder_dir):
    with pytest.raises(ValueError, match="sst2"):
        main(["--tasks", "not_a_task", "--model_name_or_path", tiny_encoder_dir, "--output_dir", str(tmp_path), *TINY])


def test_end_to_end_on_user_csv_files_with_mgda(tmp_path, tiny_encoder_dir):
    texts = ["good film", "bad film", "great acting", "awful plot", "lovely", "boring"] * 5
    for split in ("train", "dev"):
        pd.DataFrame({"review": texts, "stars": ["pos", "neg"] * 15}).to_csv(tmp_path / f"{split}_a.csv", index=False)
        pd.DataFrame({"body": texts[::-1], "size": [len(t) % 3 for t in texts]}).to_json(
            tmp_path / f"{split}_b.jsonl", orient="records", lines=True)
    specs = [
        {"name": "stars", "kind": "single_sentence_classification", "train_file": str(tmp_path / "train_a.csv"),
         "validation_file": str(tmp_path / "dev_a.csv"), "text_column": "review", "label_column": "stars",
         "label_names": ["neg", "pos"]},
        {"name": "size", "kind": "single_sentence_classification", "train_file": str(tmp_path / "train_b.jsonl"),
         "validation_file": str(tmp_path / "dev_b.jsonl"), "text_column": "body", "label_column": "size",
         "label_names": ["0", "1", "2"], "role": "auxiliary"},
    ]
    out = tmp_path / "run"
    metrics = main(["--task_specs", json.dumps(specs), "--model_name_or_path", tiny_encoder_dir, "--combiner", "mgda",
                    "--output_dir", str(out), *TINY])
    for key in ("eval_stars_accuracy", "eval_size_accuracy", "eval_average", "eval_stars_majority_baseline"):
        assert key in metrics
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["eval_average"] == pytest.approx(metrics["eval_average"])
    assert "| stars | accuracy |" in (out / "results.md").read_text()
    assert (out / "model.safetensors").is_file()


def test_glue_by_name_from_local_files(tmp_path, tiny_encoder_dir):
    root = tmp_path / "glue"
    for name, columns in {"rte": ("sentence1", "sentence2"), "sst2": ("sentence",)}.items():
        (root / name).mkdir(parents=True)
        for split in ("train", "validation"):
            rows = {c: [f"{c} number {i} of {split}" for i in range(12)] for c in columns}
            rows["label"] = [i % 2 for i in range(12)]
            rows["idx"] = list(range(12))
            pd.DataFrame(rows).to_parquet(root / name / f"{split}-00000-of-00001.parquet")
    metrics = main(["--tasks", "sst2,rte", "--glue_data_dir", str(root), "--model_name_or_path", tiny_encoder_dir,
                    "--output_dir", str(tmp_path / "out"), *TINY])
    assert "eval_rte_accuracy" in metrics and "eval_sst2_accuracy" in metrics


def test_lora_options_train_an_adapter_and_save_peft_format_and_merged(tmp_path, tiny_encoder_dir):
    pytest.importorskip("peft")
    from hf_mtl import MultiTaskModel

    out = tmp_path / "lora"
    metrics = main(["--tasks", "rotten_tomatoes,debate_party", "--model_name_or_path", tiny_encoder_dir,
                    "--combiner", "mgda", "--lora_r", "4", "--lora_target_modules", "query,key,value",
                    "--save_merged_model", "True", "--output_dir", str(out), *TINY])
    assert "eval_average" in metrics
    adapter = json.loads((out / "encoder" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], sorted(adapter["target_modules"])) == (4, 8, ["key", "query", "value"])
    card = (out / "README.md").read_text()
    assert "- lora" in card and "Encoder adapter: LORA (r = 4, alpha = 8, on key, query, value)" in card
    loaded, merged = MultiTaskModel.from_pretrained(out), MultiTaskModel.from_pretrained(out / "merged")
    assert loaded.has_adapter and not merged.has_adapter
    text = ["A gripping, beautifully acted film."]
    ours, theirs = loaded.predict(text), merged.predict(text)
    assert ours.keys() == theirs.keys() == {"rotten_tomatoes", "debate_party"}
    for task in ours:
        assert ours[task][0]["label"] == theirs[task][0]["label"]
        assert ours[task][0]["score"] == pytest.approx(theirs[task][0]["score"], rel=1e-4)
