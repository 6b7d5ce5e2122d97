"""Regression head: squared-error losses with NaN labels ignored, values as predictions, correlations."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from hf_mtl import MultiTaskModel, Task
from hf_mtl.heads import RegressionHead


def test_regression_head(tiny_encoder_dir, tokenizer):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, [Task("score", "regression")]).eval()
    head = model.heads["score"]
    assert isinstance(head, RegressionHead)
    batch = {**tokenizer(["one", "two", "three"], padding=True, return_tensors="pt"),
             "labels": torch.tensor([0.5, float("nan"), 1.5])}
    z = model.encode(batch)
    logits = head(z, batch)
    assert logits.shape == (3, 1)
    keep = torch.tensor([True, False, True])
    assert torch.allclose(head.loss(logits, batch), F.mse_loss(logits.view(-1)[keep], batch["labels"][keep]))
    losses, counts = head.example_losses(logits, batch)
    assert counts.tolist() == [1.0, 0.0, 1.0]
    assert torch.allclose(losses.sum() / counts.sum(), head.loss(logits, batch))
    predictions = head.predict(z, logits, batch)
    assert predictions.shape == (3,)
    values, references = head.metric_arrays(predictions, batch["labels"])
    assert references.tolist() == [0.5, 1.5] and values.shape == (2,)
    assert set(head.compute_metrics(values, references)) == {"pearson", "spearmanr"}
    assert RegressionHead.collate_labels(None, [0.5, 1], 4).dtype == torch.float32
