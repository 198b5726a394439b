"""The method on a tiny masked-LM model, without the CLI: what the hooks capture, stop-gradient, the batch of one,
the queue in the state, the task check."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

from plmkit.capt import PROJECTION, CAPTMethod, ProjectionHead, clean_ids
from plmkit.core.errors import MethodError
from plmkit.core.losses import mask_tokens, nt_xent, pool
from plmkit.core.tasks.masked_lm import masked_lm_forward
from plmkit.core.testing import tiny_model
from plmkit.core.training import MethodContext


def _model(method: CAPTMethod):
    model, tokenizer = tiny_model(head="masked-lm")
    method.prepare_model(model, None)
    return model.train(), tokenizer


def _batch(tokenizer, seed: int = 0, n: int = 4) -> dict[str, torch.Tensor]:
    texts = ["a good film of fun", "the worst story", "who is it and where", "that movie was dull"][:n]
    enc = tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    special = torch.tensor([[t in tokenizer.all_special_ids for t in row] for row in enc["input_ids"].tolist()])
    maskable = enc["attention_mask"].bool() & ~special
    ids, labels = mask_tokens(enc["input_ids"], maskable, tokenizer.mask_token_id, len(tokenizer), 0.4,
                              generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": enc["attention_mask"], "labels": labels}


def _step(method: CAPTMethod, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """One training forward as the core runs it (prepare_batch, the task's masked forward, loss_terms)."""
    batch = method.prepare_batch(dict(batch), None)
    logits, targets, _ = masked_lm_forward(model, batch)
    mlm = torch.nn.functional.cross_entropy(logits, targets)
    return mlm, method.loss_terms(model, batch, None, None)["capt"]


def test_clean_view_is_recovered_from_the_masked_batch():
    ids = torch.tensor([[101, 103, 7, 55, 102]])
    labels = torch.tensor([[-100, 9, -100, 8, -100]])  # 103 = [MASK] for 9, 55 = a random token for 8
    assert clean_ids(ids, labels).tolist() == [[101, 9, 7, 8, 102]]


def test_hooks_capture_both_views_and_leave_the_task_forward_unchanged():
    method = CAPTMethod(projection_size=8)
    model, tokenizer = _model(method)
    batch = _batch(tokenizer)
    plain_logits, _, _ = masked_lm_forward(model, dict(batch))  # not armed: the hooks do nothing
    armed = method.prepare_batch(dict(batch), None)
    logits, _, _ = masked_lm_forward(model, armed)
    torch.testing.assert_close(logits, plain_logits, rtol=0, atol=0)
    z_clean, z_corrupted = method._views
    with torch.no_grad():
        base, head = model.base_model, getattr(model, PROJECTION)
        clean = clean_ids(batch["input_ids"], batch["labels"])
        want_clean = head(pool(base(input_ids=clean, attention_mask=batch["attention_mask"])[0], kind="cls"))
        want_corrupted = head(pool(base(input_ids=batch["input_ids"],
                                        attention_mask=batch["attention_mask"])[0], kind="cls"))
    torch.testing.assert_close(z_clean, want_clean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z_corrupted, want_corrupted, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(z_clean, z_corrupted)  # the masks changed the corrupted view


def test_the_capt_loss_is_nt_xent_of_each_sequence_with_its_own_corrupted_view():
    method = CAPTMethod(projection_size=8, pooling="mean", temperature=0.2, capt_weight=0.5)
    model, tokenizer = _model(method)
    batch = _batch(tokenizer)
    _, capt = _step(method, model, batch)
    with torch.no_grad():
        base, head = model.base_model, getattr(model, PROJECTION)
        mask = batch["attention_mask"]
        z = [head(pool(base(input_ids=ids, attention_mask=mask)[0], mask, "mean"))
             for ids in (clean_ids(batch["input_ids"], batch["labels"]), batch["input_ids"])]
    assert capt.item() == pytest.approx(0.5 * nt_xent(z[0], z[1], 0.2).item(), rel=1e-5)
    # paired row by row: the same views with the corrupted rows shuffled give another (higher) loss
    assert capt.item() < 0.5 * nt_xent(z[0], z[1][[1, 2, 3, 0]], 0.2).item()


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("stop", [True, False])
def test_stop_gradient_stops_the_gradient_into_the_clean_view(stop):
    method = CAPTMethod(projection_size=8, stop_gradient_clean=stop)
    model, tokenizer = _model(method)
    batch = _batch(tokenizer)
    _, capt = _step(method, model, batch)
    capt.backward()
    got = _grads(model)
    model.zero_grad(set_to_none=True)
    # the reference: the clean view as a constant, only the corrupted view differentiable
    base, head = model.base_model, getattr(model, PROJECTION)
    mask = batch["attention_mask"]
    with torch.no_grad():
        z_clean = head(pool(base(input_ids=clean_ids(batch["input_ids"], batch["labels"]), attention_mask=mask)[0]))
    z_corrupted = head(pool(base(input_ids=batch["input_ids"], attention_mask=mask)[0]))
    nt_xent(z_clean, z_corrupted, method.config.temperature).backward()
    want = _grads(model)
    assert got.keys() == want.keys()
    close = all(torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-7) for k in got)
    assert close == stop  # without stop-gradient the clean view's gradient adds to it


def test_a_batch_of_one_is_a_clear_error():
    method = CAPTMethod(projection_size=8)
    model, tokenizer = _model(method)
    with pytest.raises(MethodError, match="batch size 1"):
        _step(method, model, _batch(tokenizer, n=1))
    args = TrainingArguments(output_dir="unused", per_device_train_batch_size=1, report_to=[])
    with pytest.raises(MethodError, match="got batch size 1"):
        method.on_train_begin(MethodContext(args))


def test_the_queue_adds_negatives_and_is_carried_in_the_state():
    method = CAPTMethod(projection_size=8, queue_size=6)
    model, tokenizer = _model(method)
    _step(method, model, _batch(tokenizer, seed=0))
    assert len(method.queue) == 4
    _, with_queue = _step(method, model, _batch(tokenizer, seed=1))
    assert len(method.queue) == 6
    state = method.state_dict()
    assert state["queue"].shape == (6, 8) and state["queue_count"] == 6
    again = CAPTMethod(projection_size=8, queue_size=6)
    again.load_state_dict(state)
    assert torch.equal(again.queue.buffer, method.queue.buffer) and again.queue.ptr == method.queue.ptr
    # a batch of one trains once the queue holds negatives
    _, single = _step(method, model, _batch(tokenizer, n=1))
    assert single.item() > 0
    with pytest.raises(MethodError, match="no capt state"):
        again.load_state_dict({})


def test_the_projection_head_is_a_submodule_and_export_drops_it():
    method = CAPTMethod(projection_size=12)
    model, _ = _model(method)
    head = getattr(model, PROJECTION)
    assert isinstance(head, ProjectionHead) and head.out.out_features == 12
    assert any(n.startswith(f"{PROJECTION}.") for n, _ in model.named_parameters())
    # prepare_model again (a reloaded run folder that already has one) keeps the same head
    method.prepare_model(model, None)
    assert getattr(model, PROJECTION) is head
    exported = method.export(model)
    assert not hasattr(exported, PROJECTION)
    assert not any(PROJECTION in n for n in exported.state_dict())
    assert not model.base_model._forward_hooks and not model._forward_hooks


def test_capt_refuses_a_classification_task():
    from plmkit.core.tasks import DataSource, build_task

    task = build_task("classification", {}, DataSource.from_args(None))
    model, _ = tiny_model()
    args = TrainingArguments(output_dir="unused", report_to=[])
    with pytest.raises(MethodError, match="masked_lm"):
        CAPTMethod().prepare_model(model, MethodContext(args, task))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_cls_pooling_over_packed_blocks_is_warned_about(pooling, caplog):
    """With packing 'blocks' the first position of an example is any token of the running text, not [CLS]."""
    from plmkit.core.tasks import DataSource, build_task

    task = build_task("masked_lm", {"packing": "blocks"}, DataSource.from_args(None))
    model, _ = tiny_model(head="masked-lm")
    args = TrainingArguments(output_dir="unused", report_to=[])
    with caplog.at_level("WARNING", logger="plmkit.capt.method"):
        CAPTMethod(pooling=pooling).prepare_model(model, MethodContext(args, task))
    warned = any("packing 'blocks'" in r.getMessage() for r in caplog.records)
    assert warned == (pooling == "cls")


def test_noise_cosines_measure_each_noise_type_on_the_encoder():
    from plmkit.capt.analysis import NOISES, REFERENCE, noise_cosines, pooled_states

    model, tokenizer = tiny_model(head="masked-lm")
    model.train()
    texts = ["a good film of fun and more", "the worst story", "who is it and where is that"]
    cos = noise_cosines(model, tokenizer, texts, batch_size=2)
    assert set(cos) == {*NOISES, REFERENCE} and model.training
    for values in cos.values():
        assert values.shape == (3,) and (values <= 1 + 1e-5).all() and (values > -1).all()
    # the reference: each text against the next one (the last against the first), across batch boundaries
    with torch.no_grad():
        h = [pool(model.eval().base_model(**tokenizer([t], return_tensors="pt"))[0]) for t in texts]
    model.train()
    want = [torch.nn.functional.cosine_similarity(h[i], h[(i + 1) % 3]).item() for i in range(3)]
    torch.testing.assert_close(cos[REFERENCE], torch.tensor(want), rtol=0, atol=1e-5)
    # pooled_states: the same h, batched and padded, the model left in training mode
    torch.testing.assert_close(pooled_states(model, tokenizer, texts, batch_size=2), torch.cat(h), rtol=0, atol=1e-5)
    assert model.training
    again = noise_cosines(model, tokenizer, texts, pooling="mean")  # the same corrupted sentences every call
    assert torch.equal(noise_cosines(model, tokenizer, texts, pooling="mean")["shuffling"], again["shuffling"])
