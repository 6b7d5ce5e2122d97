"""Mixed precision: bf16 autocast trains; a GradScaler's scale is divided out of the Gram and kept on .grad."""

from __future__ import annotations

import pytest
import torch

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtl.combiners import Combiner


class Recording(Combiner):
    """MGDA-like weights that depend on the Gram's scale (1/‖g_k‖²), recording what they saw."""

    name = "recording"

    def __call__(self, gram=None, losses=None):
        self.gram = gram.clone()
        return 1.0 / gram.diagonal()


def make_trainer(tmp_path, encoder_dir, tasks, data, tokenizer, combiner_object=None, **overrides):
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(encoder_dir, tasks)
    args = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=6, max_steps=2, learning_rate=1e-3,
                report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", sampling_strategy="uniform",
                dataloader_num_workers=0)
    args.update(overrides)
    return model, MultiTaskTrainer(model, MultiTaskTrainingArguments(**args), train_dataset=data,
                                   processing_class=tokenizer, combiner=combiner_object)


@pytest.mark.parametrize("mode", ["params", "encoder_output"])
def test_bf16_autocast_trains_with_mgda(mode, tmp_path, tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    model, trainer = make_trainer(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, bf16=True,
                                  combiner="mgda", gradient_mode=mode)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    seen_dtypes = set()
    hook = model.encoder.encoder.layer[0].intermediate.dense.register_forward_hook(
        lambda module, inputs, output: seen_dtypes.add(output.dtype))
    trainer.train()
    hook.remove()
    assert seen_dtypes == {torch.bfloat16}, seen_dtypes
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters(), strict=True))
    assert torch.isfinite(trainer.last_step.weights).all()


@pytest.mark.parametrize("mode", ["params", "encoder_output"])
def test_grad_scaler_scale_is_divided_out_of_the_gram(mode, tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                      three_task_data, monkeypatch):
    results = {}
    for scale in (1.0, 1024.0):
        combiner = Recording()
        model, trainer = make_trainer(tmp_path / str(scale), tiny_encoder_dir, three_tasks, three_task_data,
                                      tokenizer, combiner_object=combiner, gradient_mode=mode)
        monkeypatch.setattr(trainer.step_strategy.context, "grad_scale", lambda s=scale: s)
        trainer.current_gradient_accumulation_steps = 1
        batch = next(iter(trainer.get_train_dataloader()))
        model.eval()  # no dropout: both runs see the same function
        trainer.training_step(model, batch)
        grads = torch.cat([p.grad.reshape(-1) for p in model.encoder.parameters() if p.grad is not None])
        results[scale] = (combiner.gram, grads)
    gram_1, grads_1 = results[1.0]
    gram_s, grads_s = results[1024.0]
    torch.testing.assert_close(gram_s, gram_1, rtol=1e-4, atol=0.0)
    # params mode writes the combination itself and hands it back scaled, for the scaler to unscale and
    # inspect; in encoder_output mode the final backward is accelerator.backward, which applies the real
    # scaler's scale (absent here), so the gradient is the same.
    factor = 1024.0 if mode == "params" else 1.0
    torch.testing.assert_close(grads_s, grads_1 * factor, rtol=1e-4, atol=1e-6)
