"""UnitGates: head/neuron keep-masks held in the model (state dict, sync before every forward, per-example rows),
first-order importance, learned scores (movement, L0), a fixed ordering, detach and compaction."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from plmkit.core.errors import MethodError
from plmkit.core.sparsity import (
    UnitGates,
    add_structural_gates,
    first_order_importance,
    hard_concrete,
    keep_masks,
    load_compacted,
    units_to_keep,
)
from plmkit.core.testing import tiny_model


def _inputs(model, batch=3, length=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _masks(seed=0, rows=1):
    gen = torch.Generator().manual_seed(seed)
    heads = (torch.rand(rows, 2, 4, generator=gen) > 0.4).float()
    heads[:, :, 0] = 1.0
    return heads, (torch.rand(rows, 2, 64, generator=gen) > 0.5).float()


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_masks_live_in_the_state_dict_and_gate_every_forward(kind, tmp_path):
    model, _ = tiny_model(kind)
    model.eval()
    inputs = _inputs(model)
    dense = _logits(model, inputs)
    gates = UnitGates.attach(model)
    assert torch.equal(_logits(model, inputs), dense)  # all ones: nothing changes
    assert {k for k in model.state_dict() if "unit_gates" in k} == {"unit_gates.head_mask", "unit_gates.neuron_mask"}
    with pytest.raises(ValueError, match="already has unit gates"):
        UnitGates.attach(model)
    gates.set_masks(*_masks())
    gated = _logits(model, inputs)
    assert not torch.allclose(gated, dense)
    # A fresh model with gates takes the masks from the state dict alone (synced before its first forward).
    again, _ = tiny_model(kind)
    UnitGates.attach(again)
    again.load_state_dict(model.state_dict())
    assert torch.equal(_logits(again.eval(), inputs), gated)
    compact = gates.compact(model)
    assert not hasattr(compact, "unit_gates")
    torch.testing.assert_close(_logits(compact, inputs), gated, atol=1e-5, rtol=0)
    if kind == "bert":
        compact.save_pretrained(tmp_path)
        reloaded = load_compacted(AutoModelForSequenceClassification, tmp_path)
        torch.testing.assert_close(_logits(reloaded, inputs), gated, atol=1e-5, rtol=0)


def test_detach_restores_the_plain_model():
    model, _ = tiny_model("roberta")
    model.eval()
    inputs = _inputs(model)
    dense = _logits(model, inputs)
    gates = UnitGates.attach(model)
    gates.set_masks(torch.zeros(2, 4), torch.zeros(2, 64))  # [L, U] masks apply to every row
    assert not torch.allclose(_logits(model, inputs), dense)
    gates.detach(model)
    assert not hasattr(model, "unit_gates") and torch.equal(_logits(model, inputs), dense)


def test_each_example_uses_its_row_for_one_forward():
    model, _ = tiny_model("xlmr")
    model.eval()
    gates = UnitGates.attach(model, num_masks=3)
    gates.set_masks(*_masks(rows=3))
    inputs = _inputs(model, batch=4)
    rows = torch.tensor([2, 0, 1, 2])
    gates.use_rows(rows)
    mixed = _logits(model, inputs)
    assert gates.rows is None  # consumed by that forward
    alone = []
    for i in range(4):
        gates.use_rows(rows[i : i + 1])
        alone.append(_logits(model, {k: v[i : i + 1] for k, v in inputs.items()}))
    torch.testing.assert_close(mixed, torch.cat(alone), atol=1e-5, rtol=0)
    with pytest.raises(MethodError, match="need each example's row"):
        model(**inputs)
    with pytest.raises(MethodError, match=r"must be in \[0, 3\)"):
        gates.use_rows([0, 3])


def test_importance_matches_gradients_at_the_masks():
    model, _ = tiny_model("bert")
    batches = [{**_inputs(model, seed=s), "labels": torch.tensor([0, 1, 1])} for s in range(3)]
    heads, neurons = _masks(seed=1)
    gates = UnitGates.attach(model)
    gates.set_masks(heads, neurons)
    summed = []
    raw = gates.importance(model, batches, normalize=None, all_reduce=lambda t: summed.append(t) or t)
    assert len(summed) == 2 and all(p.grad is None for p in model.parameters())
    # The same as the core's gates set to the masks (the reference's head_mask with requires_grad).
    gates.detach(model)
    reference = add_structural_gates(model)
    reference.set_masks(heads[0], neurons[0])
    expected = first_order_importance(model, reference, batches, normalize=None)
    torch.testing.assert_close(raw[0][0], expected[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(raw[1][0], expected[1], atol=1e-6, rtol=1e-5)
    assert (raw[0][heads == 0] > 0).any()  # a pruned head's gate still has a gradient
    reference.remove()
    gates = UnitGates.attach(model)
    gates.set_masks(heads, neurons)
    live_heads, live_neurons = gates.importance(model, batches, live_only=True)
    assert torch.equal(live_heads == 0, heads == 0)
    normalized = raw[0] * heads
    torch.testing.assert_close(live_heads, normalized / normalized.norm(dim=-1, keepdim=True), atol=1e-6, rtol=1e-5)
    assert live_neurons.norm(dim=-1).sub(1).abs().max() < 1e-5


def test_per_row_importance_comes_from_each_rows_own_examples():
    model, _ = tiny_model("xlmr")
    gates = UnitGates.attach(model, num_masks=2)
    gates.set_masks(*_masks(rows=2, seed=3))
    batch = {**_inputs(model, batch=4), "labels": torch.tensor([0, 1, 1, 0]), "row": torch.tensor([0, 1, 1, 0])}

    def loss(m, b, only=None):
        rows = b["row"] if only is None else torch.full_like(b["row"], only)
        m.unit_gates.use_rows(rows)
        logits = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        losses = torch.nn.functional.cross_entropy(logits, b["labels"], reduction="none")
        return sum(losses[b["row"] == g].mean() for g in (0, 1))

    heads, _ = gates.importance(model, [batch], loss, normalize=None)
    for g in (0, 1):
        part = {k: v[batch["row"] == g] for k, v in batch.items()}
        alone, _ = gates.importance(model, [part], lambda m, b, g=g: loss(m, b, g), normalize=None)
        torch.testing.assert_close(heads[g], alone[g], atol=1e-6, rtol=1e-5)


def test_movement_scores_drive_the_gates_with_straight_through_gradients():
    model, _ = tiny_model("bert")
    gates = UnitGates.attach(model, scores="movement", scope="layer")
    with torch.no_grad():
        gates.head_scores.copy_(torch.arange(8.0).view(1, 2, 4))
    gates.learning, gates.sparsity = True, 0.5
    heads, _ = gates.values()
    assert heads.tolist() == [[[0, 0, 1, 1], [0, 0, 1, 1]]]
    model(**_inputs(model), labels=torch.tensor([0, 1, 1])).loss.backward()
    assert gates.head_scores.grad is not None and (gates.head_scores.grad != 0).all()  # pruned heads too
    gates.freeze(0.75)
    assert not gates.learning and not gates.head_scores.requires_grad
    assert gates.head_mask.tolist() == [[[0, 0, 0, 1], [0, 0, 0, 1]]]


def test_l0_gates_sample_in_training_and_pull_towards_the_target():
    model, _ = tiny_model("bert")
    gates = UnitGates.attach(model, scores="l0", score_init=3.0)
    sample = hard_concrete(torch.zeros(1000))
    assert sample.min() >= 0 and sample.max() <= 1 and 0.2 < sample.mean() < 0.8
    gates.learning, gates.sparsity = True, 0.5
    gates.train()
    assert not torch.equal(gates.values()[0], gates.values()[0])  # a fresh sample per forward
    gates.eval()
    assert gates.values()[0].sum() == 4  # evaluation: the top half of the log-alphas
    expected_heads, _ = gates.expected_sparsity()
    assert expected_heads < 0.1  # log-alpha 3: nearly all gates open
    gates.lagrangian(0.5).backward()
    assert gates.lagrange.grad[0] < 0  # gap below the target: ascent raises lambda1
    assert "unit_gates.lagrange" in model.state_dict()


def test_ordering_gives_nested_masks_at_any_sparsity():
    model, _ = tiny_model("bert")
    gates = UnitGates.attach(model, ordering=True, scope="global", min_heads=1)
    gen = torch.Generator().manual_seed(0)
    gates.set_ordering(torch.rand(2, 4, generator=gen), torch.rand(2, 64, generator=gen))
    previous = None
    for sparsity in (0.0, 0.25, 0.5, 0.75, 0.9):
        heads, neurons = gates.masks(sparsity)
        assert (heads.sum(-1) >= 1).all() and neurons.sum() == 128 - int(sparsity * 128)
        if previous is not None:
            assert (heads <= previous[0]).all() and (neurons <= previous[1]).all()
        previous = heads, neurons
    scores = torch.rand(3, 2, 8, generator=gen)
    assert torch.equal(keep_masks(scores, 0.5, "layer")[1], units_to_keep(scores[1], 0.5, "layer"))
