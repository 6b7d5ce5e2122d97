"""A LoRA adapter (peft) on the shared encoder: only the adapter and the heads train, one step is exact against an
independent autograd reference, and saved directories keep peft's adapter format."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tensor_checks import assert_close_by_norm
from transformers import AutoModel

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task
from hf_mtl.adapters import ADAPTER_SUBFOLDER, AdapterArguments
from hf_mtl.combiners import Combiner

peft = pytest.importorskip("peft")

TEXTS = ["a gripping film", "dull and long", "loved it", "no sense at all", "warm and charming", "tedious",
         "superb direction", "worst this year"]


class InverseNorm(Combiner):
    """w_k = 1/‖g_k‖: a non-linear function of the Gram, so a wrong Gram gives wrong weights."""

    name = "test_adapter_inverse_norm"
    needs_gradients = True

    def __call__(self, gram=None, losses=None):
        return 1.0 / gram.diagonal().sqrt()


def lora(**overrides):
    # init_lora_weights=False: B is random too, so both A and B get non-zero gradients from the first step.
    options = dict(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False)
    options.update(overrides)
    return peft.LoraConfig(**options)


def tasks():
    return [Task("polarity", num_labels=2, label_names=["neg", "pos"]), Task("size", num_labels=3),
            Task("score", "regression")]


def lora_model(encoder_dir, **overrides):
    torch.manual_seed(0)
    return MultiTaskModel.from_encoder(encoder_dir, tasks(), peft_config=lora(**overrides))


def labels_for(name, n, offset=0):
    if name == "score":
        return torch.linspace(-1.0, 1.0, n) + offset
    return torch.tensor([(i + offset) % (2 if name == "polarity" else 3) for i in range(n)])


def disjoint_batch(tokenizer):
    batches = {}
    for k, task in enumerate(tasks()):
        batch = dict(tokenizer(TEXTS[k:k + 4], padding=True, return_tensors="pt"))
        batch["labels"] = labels_for(task.name, 4, k)
        batches[task.name] = batch
    return {"task_batches": batches}


def shared_batch(tokenizer):
    inputs = dict(tokenizer(TEXTS[:6], padding=True, return_tensors="pt"))
    return {"inputs": inputs, "labels": {task.name: labels_for(task.name, 6) for task in tasks()}}


def one_engine_step(model, batch, tmp_path, mode="params"):
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, disable_tqdm=True,
                                      gradient_mode=mode, record_task_gradients=mode == "params")
    trainer = MultiTaskTrainer(model, args, combiner=InverseNorm())
    trainer.current_gradient_accumulation_steps = 1
    model.zero_grad(set_to_none=True)
    trainer.training_step(model, batch)
    return trainer.last_step


def test_only_the_adapter_and_the_heads_are_trainable(minilm):
    model = lora_model(minilm, init_lora_weights=True, r=8)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("heads.") for n in trainable), sorted(trainable)[:5]
    shared = model.shared_parameters()
    adapter = sum(p.numel() for p in shared)
    encoder = sum(p.numel() for p in model.encoder.parameters())
    assert {id(p) for p in shared} == {id(p) for n, p in model.named_parameters() if "lora_" in n}
    assert 70 <= encoder / adapter <= 400, f"encoder {encoder} / adapter {adapter} = {encoder / adapter:.1f}"
    assert model.config.encoder_adapter["target_modules"] == ["query", "value"]  # peft's default for BERT, recorded
    with pytest.raises(ValueError, match="sharing='hard'"):
        MultiTaskModel.from_encoder(minilm, tasks(), peft_config=lora(), sharing="soft")


@pytest.mark.parametrize("layout", ["disjoint", "shared"])
def test_params_step_equals_an_independent_autograd_reference(layout, tiny_encoder_dir, tokenizer, tmp_path):
    """J from plain ``torch.autograd.grad`` of each task's loss (the model's own forward), G = J Jᵀ,
    w = 1/√diag(G), update Σ_k w_k J_k on the adapter; each head takes its own task's gradient."""
    model = lora_model(tiny_encoder_dir)
    batch = disjoint_batch(tokenizer) if layout == "disjoint" else shared_batch(tokenizer)
    reference = lora_model(tiny_encoder_dir)
    reference.train()
    adapter = [p for n, p in reference.named_parameters() if "lora_" in n]
    losses = reference(**batch).task_losses
    rows, head_grads = [], {}
    for name in reference.task_names:
        heads = list(reference.heads[name].parameters())
        grads = torch.autograd.grad(losses[name], adapter + heads, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads[:len(adapter)]]).double())
        head_grads[name] = grads[len(adapter):]
    jacobian = torch.stack(rows)
    gram = jacobian @ jacobian.T
    weights = 1.0 / gram.diagonal().sqrt()
    update = weights @ jacobian

    record = one_engine_step(model, batch, tmp_path)

    torch.testing.assert_close(record.gram, gram, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(record.weights.double(), weights, rtol=1e-5, atol=1e-9)
    assert record.task_gradients.shape == jacobian.shape  # the buffer holds the adapter only
    ours = torch.cat([p.grad.reshape(-1) for n, p in model.named_parameters() if "lora_" in n])
    assert_close_by_norm(ours, update, "combined adapter gradient", rtol=1e-5)
    for name in model.task_names:
        for p, expected in zip(model.heads[name].parameters(), head_grads[name], strict=True):
            assert_close_by_norm(p.grad, expected, f"head {name}", rtol=1e-5)
    frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not frozen_with_grad and any(not p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("mode", ["encoder_output", "loss_weighted"])
def test_other_steps_leave_frozen_weights_without_gradients(mode, tiny_encoder_dir, tokenizer, tmp_path):
    model = lora_model(tiny_encoder_dir)
    if mode == "loss_weighted":
        args = MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, combiner="linear")
        trainer = MultiTaskTrainer(model, args)
        trainer.current_gradient_accumulation_steps = 1
        trainer.training_step(model, shared_batch(tokenizer))
    else:
        one_engine_step(model, shared_batch(tokenizer), tmp_path, mode=mode)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)


def test_saved_directory_keeps_peft_format_and_loads_back(tiny_encoder_dir, tokenizer, tmp_path):
    model = lora_model(tiny_encoder_dir)
    model.eval()
    inputs = tokenizer(TEXTS[:3], padding=True, return_tensors="pt")
    expected = model.encode(inputs)
    model.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")

    heads = load_file(tmp_path / "saved" / "model.safetensors")
    assert heads and all(key.startswith("heads.") for key in heads), sorted(heads)[:5]  # no frozen encoder copy
    adapter_config = json.loads((tmp_path / "saved" / ADAPTER_SUBFOLDER / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA" and adapter_config["base_model_name_or_path"] == tiny_encoder_dir
    # A peft user loads the encoder adapter onto the base encoder without hf_mtl.
    plain = peft.PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_encoder_dir), str(tmp_path / "saved"),
                                           subfolder=ADAPTER_SUBFOLDER).eval()
    assert_close_by_norm(plain(**inputs).last_hidden_state, expected, "peft-loaded encoder", rtol=1e-6)

    loaded = MultiTaskModel.from_pretrained(tmp_path / "saved")
    assert loaded.has_adapter and not loaded.training
    assert_close_by_norm(loaded.encode(inputs), expected, "reloaded encoder", rtol=1e-6)
    assert [n for n, p in loaded.named_parameters() if p.requires_grad] == \
        [n for n, p in model.named_parameters() if p.requires_grad]
    predictions = loaded.predict(TEXTS[:2])  # the tokenizer saved next to the model
    expected_predictions = model.predict(TEXTS[:2], tokenizer=tokenizer)
    assert predictions.keys() == expected_predictions.keys()
    for task, rows in expected_predictions.items():  # same labels; scores up to float32 rounding
        assert [row.get("label") for row in predictions[task]] == [row.get("label") for row in rows], task
        assert [row["score"] for row in predictions[task]] == pytest.approx([row["score"] for row in rows],
                                                                            rel=1e-5, abs=1e-6), task
    assert predictions["polarity"][0]["label"] in ("neg", "pos")
    remote = AutoModel.from_pretrained(tmp_path / "saved", trust_remote_code=True).eval()
    assert_close_by_norm(remote.encode(inputs), expected, "AutoModel-loaded encoder", rtol=1e-6)


def test_merged_copy_is_a_plain_model_with_the_same_outputs(tiny_encoder_dir, tokenizer, tmp_path):
    model = lora_model(tiny_encoder_dir).eval()
    inputs = tokenizer(TEXTS[:3], padding=True, return_tensors="pt")
    model.save_pretrained(tmp_path / "merged", merge_adapter=True)
    assert not (tmp_path / "merged" / ADAPTER_SUBFOLDER).exists()
    merged = MultiTaskModel.from_pretrained(tmp_path / "merged")
    assert not merged.has_adapter and not any(isinstance(m, peft.PeftModel) for m in merged.modules())
    assert_close_by_norm(merged.encode(inputs), model.encode(inputs), "merged encoder", rtol=1e-5)
    assert model.has_adapter  # merging worked on a copy
    with pytest.raises(ValueError, match="no adapter"):
        merged.save_pretrained(tmp_path / "again", merge_adapter=True)


def test_moved_base_encoder_is_named_and_can_be_given(tiny_encoder_dir, tmp_path):
    model = lora_model(tiny_encoder_dir)
    model.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    config["encoder_adapter"]["base_model_name_or_path"] = str(tmp_path / "gone")
    (tmp_path / "saved" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="gone.*base_encoder="):
        MultiTaskModel.from_pretrained(tmp_path / "saved")
    loaded = MultiTaskModel.from_pretrained(tmp_path / "saved", base_encoder=tiny_encoder_dir)
    for (name, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0, msg=name)


def test_adapter_arguments_build_the_peft_config(tmp_path):
    assert AdapterArguments().peft_config() is None
    config = AdapterArguments(lora_r=8, lora_target_modules="query, key,value").peft_config()
    assert (config.r, config.lora_alpha, sorted(config.target_modules)) == (8, 16, ["key", "query", "value"])
    lora(r=2, lora_alpha=3).save_pretrained(tmp_path)
    from_file = AdapterArguments(peft_config_file=str(tmp_path)).peft_config()
    assert (from_file.r, from_file.lora_alpha) == (2, 3)
    with pytest.raises(ValueError, match="need lora_r"):
        AdapterArguments(lora_alpha=4).peft_config()
    with pytest.raises(ValueError, match="not both"):
        AdapterArguments(lora_r=4, peft_config_file=str(tmp_path)).peft_config()
    (tmp_path / "bad.json").write_text('{"r": 4}')
    with pytest.raises(ValueError, match="bad.json.*peft_type"):
        AdapterArguments(peft_config_file=str(tmp_path / "bad.json")).peft_config()
    with pytest.raises(ValueError, match="virtual tokens"):
        MultiTaskModel.from_encoder("unused", tasks(), peft_config=peft.PromptTuningConfig(
            task_type="FEATURE_EXTRACTION", num_virtual_tokens=4))


def test_gradient_checkpointing_keeps_the_adapter_gradients(tiny_encoder_dir, tokenizer):
    """The frozen embeddings' output needs no gradient; checkpointed layers must still pass one to the adapter."""
    batch = disjoint_batch(tokenizer)
    grads = []
    for checkpointing in (False, True):
        model = lora_model(tiny_encoder_dir)
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        model(**batch).loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.shared_parameters()]))
    assert_close_by_norm(grads[1], grads[0], "adapter gradient with checkpointing", rtol=1e-5)
