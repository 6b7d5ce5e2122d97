"""The per-task gradient engine: exactness against brute force and against a plain summed-loss step,
gradient accumulation, non-finite handling and the encoder-output mode."""

from __future__ import annotations

import logging

import datasets
import pytest
import torch
from tensor_checks import assert_close_by_norm

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task, gradients
from hf_mtl.combiners import Combiner
from hf_mtl.data import tokenize_shared_dataset
from hf_mtl.gradients import TaskGradientBuffer, blocked_gram, gram_diagnostics, representation_gram


class SumOfGradients(Combiner):
    """Weights 1 on every task: u = Σ g_k, i.e. the plain summed-loss gradient, through the engine."""

    name = "test_sum"
    needs_gradients = True

    def __call__(self, gram=None, losses=None):
        self.seen_gram = gram.clone()
        return torch.ones(gram.shape[0], dtype=gram.dtype)


class InverseNorm(Combiner):
    """w_k = 1/||g_k||: a non-linear function of the Gram, so accumulation must hand it the whole batch."""

    name = "test_inverse_norm"
    needs_gradients = True

    def __call__(self, gram=None, losses=None):
        return 1.0 / gram.diagonal().sqrt()


def args_for(tmp_path, **overrides):
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=6, max_steps=3, learning_rate=1e-3,
                    logging_steps=1, save_strategy="no", report_to=[], seed=0, use_cpu=True,
                    dataloader_num_workers=0, disable_tqdm=True, sampling_strategy="uniform")
    defaults.update(overrides)
    return MultiTaskTrainingArguments(**defaults)


def trained(tmp_path, encoder_dir, tasks, data, tokenizer, combiner=None, **overrides):
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(encoder_dir, tasks)
    trainer = MultiTaskTrainer(model, args_for(tmp_path, **overrides), train_dataset=data,
                               processing_class=tokenizer, combiner=combiner)
    trainer.train()
    return model, trainer


def assert_same_parameters(a, b, rtol=1e-5, atol=1e-6):
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol, msg=f"parameter {name} differs")


@pytest.mark.parametrize("mode", ["params", "encoder_output"])
def test_engine_with_unit_weights_equals_summed_loss_step(mode, tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                         three_task_data):
    # max_grad_norm small enough that clipping is active: it must act on the combined gradient, and the
    # logged grad_norm must be the combined one (the same as the plain step's).
    reference, ref_trainer = trained(tmp_path / "ref", tiny_encoder_dir, three_tasks, three_task_data, tokenizer,
                                     max_grad_norm=0.05)
    engine, trainer = trained(tmp_path / "eng", tiny_encoder_dir, three_tasks, three_task_data, tokenizer,
                              combiner=SumOfGradients(), gradient_mode=mode, max_grad_norm=0.05)
    assert_same_parameters(reference, engine)
    logged = [e for e in trainer.state.log_history if "loss" in e]
    ref_logged = [e for e in ref_trainer.state.log_history if "loss" in e]
    assert ref_logged[0]["grad_norm"] > 0.05
    for ours, theirs in zip(logged, ref_logged, strict=True):
        assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-4)
    assert "weight_sentiment" in logged[0] and "grad_norm_score" in logged[0]
    assert "cosine_sentiment__length" in logged[0]


def test_params_gram_matches_brute_force_per_task_gradients(tiny_encoder_dir, tokenizer, three_tasks, three_task_data):
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    shared = model.shared_parameters()
    buffer = TaskGradientBuffer(shared, 3)
    brute = []
    for k, task in enumerate(three_tasks):
        rows = three_task_data[task.name].select(range(4))
        batch = tokenizer.pad([{c: r[c] for c in ("input_ids", "attention_mask", "token_type_ids")} for r in rows],
                              return_tensors="pt")
        dtype = torch.float32 if task.kind.value == "regression" else torch.long
        batch["labels"] = torch.tensor(rows["labels"], dtype=dtype)
        out = model(task_batches={task.name: batch})
        grads = torch.autograd.grad(out.task_losses[task.name], shared, allow_unused=True)
        buffer.add(k, grads)
        brute.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                for g, p in zip(grads, shared, strict=True)]))
    J = torch.stack(brute).double()
    exact = J @ J.T
    # float32 accumulation over P entries: error relative to the largest squared norm
    torch.testing.assert_close(buffer.gram(), exact, rtol=1e-5, atol=1e-6 * exact.diagonal().max().item())
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    buffer.write_combination(weights)
    combined = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in shared]).double()
    torch.testing.assert_close(combined, weights @ J, rtol=1e-5, atol=1e-8)


def test_every_step_writes_its_own_update_into_one_tensor():
    """The update tensor is allocated once; after each step ``.grad`` is that step's ``Σ_k w_k J_k`` (a
    parameter no task reached keeps ``None``), whatever the previous step left there."""
    params = [torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(2))]
    buffer = TaskGradientBuffer(params, num_tasks=2)
    generator = torch.Generator().manual_seed(0)
    storage = None
    for weights in (torch.tensor([0.25, 2.0], dtype=torch.float64), torch.tensor([0.0, -1.5], dtype=torch.float64)):
        grads = [[torch.randn(3, 2, generator=generator), torch.randn(4, generator=generator), None] for _ in range(2)]
        for k, task_grads in enumerate(grads):
            buffer.add(k, task_grads)
        buffer.reduce()
        buffer.write_combination(weights, scale=0.5)
        for i in range(2):
            expected = 0.5 * sum(float(w) * g[i] for w, g in zip(weights, grads, strict=True))
            torch.testing.assert_close(params[i].grad, expected)
        assert params[2].grad is None
        assert storage is None or params[0].grad.untyped_storage().data_ptr() == storage
        storage = params[0].grad.untyped_storage().data_ptr()
        buffer.reset()


def test_bfloat16_buffer_computes_gram_and_update_in_float32(monkeypatch):
    """A bfloat16 J keeps each gradient to 8 significant bits, but the Gram and the update are those of the
    stored values in float32 (a bfloat16 matmul would be off by ~1e-2), widened piece by piece across parameter
    boundaries; a zero-weight row holding NaN stays out of the update; the buffer takes half the memory."""
    monkeypatch.setattr(gradients, "WIDENED_COLUMNS", 1000)  # several pieces, the last one short
    shapes = [(40, 30), (7,), (25, 50), (3,)]  # P = 2460
    params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    buffer = TaskGradientBuffer(params, num_tasks=3, dtype=torch.bfloat16)
    assert buffer.nbytes * 2 == TaskGradientBuffer(params, num_tasks=3).nbytes
    generator = torch.Generator().manual_seed(0)
    grads = [[torch.randn(s, generator=generator) for s in shapes] for _ in range(3)]
    grads[1][0][0, 0] = float("nan")
    for k, task_grads in enumerate(grads):
        buffer.add(k, task_grads)
    stored = torch.stack([torch.cat([g.reshape(-1) for g in task]).bfloat16().double() for task in grads])
    buffer.reduce()
    live = [0, 2]
    exact = stored[live] @ stored[live].T
    assert_close_by_norm(buffer.gram()[live][:, live], exact, "bfloat16 J: Gram", rtol=1e-6)
    assert_close_by_norm(blocked_gram(buffer.jacobian[live], block=64), exact, "blocked over pieces", rtol=1e-6)
    weights = torch.tensor([0.5, 0.0, -2.0], dtype=torch.float64)
    buffer.write_combination(weights, scale=0.5)
    update = torch.cat([p.grad.reshape(-1) for p in params])
    assert update.dtype == torch.float32
    assert_close_by_norm(update, 0.5 * (weights[live] @ stored[live]), "bfloat16 J: update", rtol=1e-6)
    with pytest.raises(ValueError, match="dtype must be one of .*float16"):
        TaskGradientBuffer(params, num_tasks=3, dtype=torch.float16)


def test_params_step_with_bfloat16_task_gradients_takes_the_summed_loss_step(tmp_path, tiny_encoder_dir, tokenizer,
                                                                              three_tasks, three_task_data):
    """One SGD step (lr 1, so the parameter change is the gradient) with unit weights: a bfloat16 buffer gives
    the summed-loss gradient to bfloat16 precision, and the trainer logs its float32 Gram."""
    common = dict(max_steps=1, optim="sgd", learning_rate=1.0, weight_decay=0.0, lr_scheduler_type="constant")
    torch.manual_seed(0)
    start = {n: p.detach().clone() for n, p in MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks).named_parameters()}
    reference, _ = trained(tmp_path / "ref", tiny_encoder_dir, three_tasks, three_task_data, tokenizer, **common)
    engine, trainer = trained(tmp_path / "bf16", tiny_encoder_dir, three_tasks, three_task_data, tokenizer,
                              combiner=SumOfGradients(), gradient_mode="params", task_gradient_dtype="bfloat16", **common)
    assert trainer.step_strategy.buffer.dtype == torch.bfloat16
    for (name, p), (_, q) in zip(reference.named_parameters(), engine.named_parameters(), strict=True):
        assert_close_by_norm(q - start[name], p - start[name], f"step of {name}", rtol=1e-2, atol=1e-7)
    assert trainer.combiner.seen_gram.dtype == torch.float64


def test_params_step_marks_its_phases_for_the_profiler(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                       three_task_data):
    """``benchmarks/step_phases.py`` reads these ``torch.profiler`` labels."""
    from torch.profiler import profile

    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    trainer = MultiTaskTrainer(model, args_for(tmp_path, max_steps=1, combiner="mgda", gradient_mode="params"),
                               train_dataset=three_task_data, processing_class=tokenizer)
    with profile() as profiler:
        trainer.train()
    labels = {event.key for event in profiler.key_averages() if event.key.startswith("hf_mtl::")}
    assert labels == {"hf_mtl::forward", "hf_mtl::task_backward", "hf_mtl::buffer_add", "hf_mtl::reduce",
                      "hf_mtl::gram", "hf_mtl::combiner", "hf_mtl::write_combination"}


def test_blocked_gram_keeps_float64_accuracy_over_long_rows():
    """4·10⁶ columns (a fifth of a MiniLM encoder): a single float32 matmul sums each entry in one running total
    and drifts; the blocked Gram must agree with the float64 Gram to ~1e-7, tail block included."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 4_000_003, generator=generator)
    rows[1] += 0.5 * rows[0]  # correlated rows: off-diagonal entries of the size of the diagonal
    exact = rows.double() @ rows.double().T
    gram = blocked_gram(rows)
    assert gram.dtype == torch.float64
    relative = ((gram - exact).norm() / exact.norm()).item()
    assert relative < 1e-6, f"blocked Gram relative error {relative:.3e}; float32 matmul: " \
        f"{(((rows @ rows.T).double() - exact).norm() / exact.norm()).item():.3e}"


def test_accumulation_params_mode_matches_larger_batch(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                       three_task_data):
    """Batch 2B × accumulation 1 and B × accumulation 2 see the same examples and reach the same weights."""
    big, _ = trained(tmp_path / "big", tiny_encoder_dir, three_tasks, three_task_data, tokenizer,
                     combiner=InverseNorm(), per_device_train_batch_size=6, gradient_accumulation_steps=1)
    small, _ = trained(tmp_path / "small", tiny_encoder_dir, three_tasks, three_task_data, tokenizer,
                       combiner=InverseNorm(), per_device_train_batch_size=3, gradient_accumulation_steps=2)
    assert_same_parameters(big, small, rtol=1e-4, atol=1e-6)


def test_shared_input_params_mode_equals_summed_loss(tmp_path, tiny_encoder_dir, tokenizer):
    tasks = [Task("polarity", num_labels=2), Task("length", num_labels=3), Task("score", "regression")]
    texts = ["good film", "bad film", "an excellent long film indeed", "terrible", "fine", "so so movie"] * 2
    raw = datasets.Dataset.from_dict({
        "text": texts, "label_polarity": [1, 0, 1, 0, 1, 0] * 2, "label_length": [min(len(t) // 8, 2) for t in texts],
        "label_score": [len(t) / 30 for t in texts]})
    data = tokenize_shared_dataset(tasks, raw, tokenizer, max_length=16)
    common = dict(per_device_train_batch_size=4, train_sampling_strategy="sequential")
    reference, _ = trained(tmp_path / "ref", tiny_encoder_dir, tasks, data, tokenizer, **common)
    engine, trainer = trained(tmp_path / "eng", tiny_encoder_dir, tasks, data, tokenizer, combiner=SumOfGradients(),
                              **common)
    assert_same_parameters(reference, engine)
    enc, enc_trainer = trained(tmp_path / "enc", tiny_encoder_dir, tasks, data, tokenizer, combiner=SumOfGradients(),
                               gradient_mode="encoder_output", **common)
    assert_same_parameters(reference, enc)
    gram = enc_trainer.combiner.seen_gram
    assert gram.shape == (3, 3) and (gram - torch.diag(gram.diagonal())).abs().max() > 0


def test_encoder_output_warns_that_disjoint_gram_is_diagonal(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                             three_task_data, caplog):
    combiner = SumOfGradients()
    with caplog.at_level(logging.WARNING):
        trained(tmp_path, tiny_encoder_dir, three_tasks, three_task_data, tokenizer, combiner=combiner,
                gradient_mode="encoder_output", max_steps=2)
    assert sum("Gram matrix is diagonal" in r.message for r in caplog.records) == 1
    gram = combiner.seen_gram
    assert torch.count_nonzero(gram - torch.diag(gram.diagonal())) == 0


def test_representation_gram_is_the_flattened_inner_product():
    z = torch.randn(2, 3, 4, requires_grad=True)
    w1, w2 = torch.randn(4), torch.randn(4)
    l1, l2 = (z @ w1).pow(2).sum(), (z @ w2).sin().sum()
    gram = representation_gram([l1, l2], [z])
    g1 = torch.autograd.grad(l1, z, retain_graph=True)[0].reshape(-1)
    g2 = torch.autograd.grad(l2, z)[0].reshape(-1)
    expected = torch.stack([g1, g2]).double()
    torch.testing.assert_close(gram, expected @ expected.T)


def test_gram_diagnostics_norms_and_cosines():
    gram = torch.tensor([[4.0, -2.0], [-2.0, 1.0]])
    out = gram_diagnostics(gram, ["a", "b"])
    assert out == {"grad_norm_a": 2.0, "grad_norm_b": 1.0, "cosine_a__b": -1.0}


def test_nan_loss_skips_the_step_without_nan_parameters(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                        three_task_data):
    data = dict(three_task_data)
    data["score"] = data["score"].map(lambda r: {"labels": float("nan") if r["labels"] > 0 else r["labels"]})
    data["score"] = data["score"].map(lambda r: {"labels": float("inf")})
    torch.manual_seed(0)
    initial = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    model, trainer = trained(tmp_path, tiny_encoder_dir, three_tasks, data, tokenizer, combiner=SumOfGradients(),
                             max_steps=2)
    for p in model.parameters():
        assert torch.isfinite(p).all()
    assert trainer.last_step.skipped and trainer.last_step.nonfinite_tasks == ["score"]
    encoder_moved = any(not torch.equal(p, q) for p, q in zip(model.encoder.parameters(),
                                                              initial.encoder.parameters(), strict=True))
    assert not encoder_moved


def test_nan_loss_raise_policy_names_task_and_step(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                   three_task_data):
    data = dict(three_task_data)
    data["score"] = data["score"].map(lambda r: {"labels": float("inf")})
    with pytest.raises(FloatingPointError, match=r"Step 0: non-finite loss or gradient for task\(s\) \['score'\]"):
        trained(tmp_path, tiny_encoder_dir, three_tasks, data, tokenizer, combiner=SumOfGradients(),
                nonfinite_policy="raise")


class LookupModel(torch.nn.Module):
    """A vocabulary-sized embedding, a small position table and a linear layer; for task ``reuse_vocabulary`` the
    forward also multiplies by the embedding matrix outside its ``nn.Embedding`` (an output layer tied by hand),
    which makes that task's gradient of it dense."""

    def __init__(self, vocabulary: int = 5000, dim: int = 6, reuse_vocabulary: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.words = torch.nn.Embedding(vocabulary, dim, padding_idx=0)
        self.positions = torch.nn.Embedding(8, dim)
        self.mix = torch.nn.Linear(dim, dim)
        self.reuse_vocabulary = reuse_vocabulary

    def forward(self, ids: torch.Tensor, task: int) -> torch.Tensor:
        hidden = self.mix(self.words(ids) + self.positions(torch.arange(ids.shape[1])))
        if task == self.reuse_vocabulary:
            hidden = torch.nn.functional.linear(hidden, self.words.weight)
        return hidden


def lookup_losses(model, buffer, ids_per_task, nan_task=None):
    """Each task's loss on its own ids (``ids_per_task[k]``), its shared gradients added to ``buffer`` as the
    params step does (:meth:`TaskGradientBuffer.differentiated`); returns whether the vocabulary was differentiated
    through its lookups' outputs."""
    through_lookups = False
    for k, ids in enumerate(ids_per_task):
        with buffer.recording_rows():
            out = model(ids, k)
        loss = (out * torch.linspace(-1, 1, out.shape[-1])).pow(2).mean() * (k + 1)
        plan = buffer.differentiated()
        through_lookups = through_lookups or bool(plan.lookups)
        grads = list(torch.autograd.grad(loss, plan.tensors))
        if k == nan_task:
            position = plan.params.index(1)  # the position table's gradient
            grads[position] = grads[position].clone()
            grads[position][0, 0] = float("nan")
        buffer.add_differentiated(k, plan, grads)
    return through_lookups


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reuse_vocabulary", [None, 2])
def test_row_sparse_vocabulary_gives_the_dense_gram_and_update(dtype, reuse_vocabulary, caplog):
    """The vocabulary's rows that no lookup reached are left out of J, the Gram and the combination: the result
    must be the dense buffer's, over three steps of two micro-batches with different rows each (no step's rows may
    leak into the next, even after ``.grad`` was overwritten in place), with a NaN row of weight 0, in less memory;
    from the second step through the lookups' outputs, with a padding index and a row looked up twice.
    A matrix the third task uses outside its nn.Embedding is caught in the first step, after two tasks' rows were
    kept, and goes back into the storage with those rows."""
    generator = torch.Generator().manual_seed(1)
    sparse_model, dense_model = LookupModel(reuse_vocabulary=reuse_vocabulary), LookupModel(reuse_vocabulary=reuse_vocabulary)
    embeddings = gradients.vocabulary_embeddings(sparse_model, list(sparse_model.parameters()))
    assert list(embeddings) == [0], "the 8-row position table is not vocabulary-sized"
    sparse = TaskGradientBuffer(list(sparse_model.parameters()), num_tasks=3, dtype=dtype,
                                row_sparse={i: gradients.LookedUpRows(m) for i, m in embeddings.items()})
    dense = TaskGradientBuffer(list(dense_model.parameters()), num_tasks=3, dtype=dtype)
    weights = torch.tensor([0.5, 0.0, -2.0], dtype=torch.float64)
    live = [0, 2]
    for step in range(3):
        for _micro_batch in range(2):
            # more rows in later steps: the row slots grow while the lookups' gradients are added
            ids = [torch.randint(0, 5000, (2 + 2 * step, 8), generator=generator) for _ in range(3)]
            for task_ids in ids:
                task_ids[:, 0], task_ids[:, 1] = 0, task_ids[:, 2]  # padding, and a row looked up twice
            with caplog.at_level(logging.WARNING, logger="hf_mtl.gradients"):
                through_lookups = lookup_losses(sparse_model, sparse, ids, nan_task=1)
            assert not lookup_losses(dense_model, dense, ids, nan_task=1)
            # From the second step the vocabulary is differentiated through its lookups' outputs.
            assert through_lookups == (reuse_vocabulary is None and step > 0), (step, through_lookups)
        assert sparse.row_sparse == (() if reuse_vocabulary is not None else (0,))
        for buffer in (sparse, dense):
            buffer.reduce()
            buffer.write_combination(weights, scale=0.5)
        assert_close_by_norm(sparse.gram()[live][:, live], dense.gram()[live][:, live], f"step {step}: Gram",
                             rtol=1e-6 if dtype == torch.float32 else 1e-2)
        assert torch.isnan(sparse.gram()[1, 1]), f"step {step}: NaN task's Gram diagonal {sparse.gram()[1, 1]}"
        # float32: summation order only; bfloat16: a repeated row may round to the other neighbour
        rtol = 1e-6 if dtype == torch.float32 else 1e-2
        assert_close_by_norm(sparse.jacobian[live].double(), dense.jacobian[live].double(), f"step {step}: J",
                             rtol=rtol, atol=0.0)
        for (name, p), q in zip(sparse_model.named_parameters(), dense_model.parameters(), strict=True):
            assert_close_by_norm(p.grad, q.grad, f"step {step}: update of {name}", rtol=rtol)
        for buffer, model in ((sparse, sparse_model), (dense, dense_model)):
            buffer.reset()
            model.words.weight.grad.fill_(float("nan"))  # e.g. clipping by a NaN norm, in place
        if reuse_vocabulary is None:
            assert sparse.nbytes < dense.nbytes - sparse.params[0].numel() * 3 * dense._storage.element_size() / 2
    warned = [r for r in caplog.records if "kept dense" in r.getMessage()]
    assert len(warned) == (0 if reuse_vocabulary is None else 1), [r.getMessage() for r in caplog.records]


def test_vocabulary_embeddings_leaves_out_a_matrix_tied_to_an_output_layer():
    """An output layer holding the embedding matrix (tied weights) makes its gradient dense."""
    model = LookupModel()
    assert list(gradients.vocabulary_embeddings(model, list(model.parameters()))) == [0]
    model.out = torch.nn.Linear(6, 5000, bias=False)
    model.out.weight = model.words.weight
    assert gradients.vocabulary_embeddings(model, list(model.parameters())) == {}
    assert list(gradients.vocabulary_embeddings(model, list(model.parameters()), min_rows=8)) == [1]


def test_params_step_treats_the_encoder_vocabulary_row_by_row(tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                              three_task_data):
    """A BERT's word embeddings (its only vocabulary-sized matrix) are row-sparse in the trainer's buffer, held
    outside its K × P storage."""
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(tiny_encoder_dir, three_tasks)
    trainer = MultiTaskTrainer(model, args_for(tmp_path, max_steps=2, combiner="mgda", gradient_mode="params"),
                               train_dataset=three_task_data, processing_class=tokenizer)
    trainer.train()
    buffer = trainer.step_strategy.buffer
    shared = model.shared_parameters()
    assert buffer.row_sparse == (0,) and shared[0] is model.get_input_embeddings().weight
    dense_bytes = 3 * sum(p.numel() for p in shared) * 4
    assert buffer.nbytes < dense_bytes - 3 * shared[0].numel() * 4 / 2, (buffer.nbytes, dense_bytes)


@pytest.mark.parametrize("mode", ["params", "encoder_output"])
def test_gradient_checkpointing_gives_the_same_step(mode, tmp_path, tiny_encoder_dir, tokenizer, three_tasks,
                                                    three_task_data):
    """``gradient_checkpointing=True`` recomputes the encoder's layers in every task's backward (and records the
    looked-up rows again): the parameters must be those of the step without it."""
    reference, _ = trained(tmp_path / "ref", tiny_encoder_dir, three_tasks, three_task_data, tokenizer,
                           combiner=SumOfGradients(), gradient_mode=mode)
    checkpointed, trainer = trained(tmp_path / "ckpt", tiny_encoder_dir, three_tasks, three_task_data, tokenizer,
                                    combiner=SumOfGradients(), gradient_mode=mode, gradient_checkpointing=True)
    assert checkpointed.encoder.is_gradient_checkpointing
    assert_same_parameters(reference, checkpointed)
