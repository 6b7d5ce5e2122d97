"""Token classification head: per-token logits, token-mean loss, summed per-example losses, flat metrics."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from hf_mtl import MultiTaskModel, Task
from hf_mtl.heads import TokenClassificationHead


def test_token_classification_head(tiny_encoder_dir, tokenizer):
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, [Task("tags", "token_classification", num_labels=4)])
    head = model.heads["tags"].eval()
    encoded = tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    width = encoded["input_ids"].shape[1]
    labels = TokenClassificationHead.collate_labels(None, [[-100, 1, 2, 3, -100], [-100, 0, -100]], width)
    assert labels.shape == (2, width) and labels[1, 3:].eq(-100).all()
    batch = {**encoded, "labels": labels}
    z = model.encode(batch)
    logits = head(z, batch)
    assert logits.shape == (2, width, 4)
    expected = F.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1), ignore_index=-100)
    assert torch.allclose(head.loss(logits, batch), expected)
    losses, counts = head.example_losses(logits, batch)
    assert counts.tolist() == [3.0, 1.0]
    assert torch.allclose(losses.sum() / counts.sum(), expected)
    predictions, references = head.metric_arrays(head.predict(z, logits, batch), labels)
    assert references.tolist() == [1, 2, 3, 0] and predictions.shape == (4,)
    assert set(head.compute_metrics(predictions, references)) == {"accuracy"}
