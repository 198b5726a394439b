"""Sliced forwards (``sliced_units``, ``UnitGates.sliced``): the kept units' weights only, the same logits and
gradients as the gated forward and the compacted model, the model unchanged afterwards, clear errors."""

import copy

import pytest
import torch

from plmkit.core.errors import MethodError
from plmkit.core.sparsity import UnitGates, can_slice, mask_linears, sliced_units, transformer_blocks
from plmkit.core.testing import tiny_model


def _inputs(model, batch=3, length=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 1])}


def _masks(seed=0, empty_layer=False):
    gen = torch.Generator().manual_seed(seed)
    heads = (torch.rand(2, 4, generator=gen) > 0.5).float()
    neurons = (torch.rand(2, 64, generator=gen) > 0.7).float()
    heads[0, 1] = 1.0
    if empty_layer:  # layer 1 loses every head and every neuron: its projections add only their biases
        heads[1], neurons[1] = 0.0, 0.0
    return heads, neurons


def _loss_and_grads(model, inputs):
    model.zero_grad()
    out = model(**inputs)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
@pytest.mark.parametrize("empty_layer", [False, True])
def test_sliced_forward_equals_gated_forward_and_compacted_model(kind, empty_layer):
    model, _ = tiny_model(kind)
    model.config.pad_token_id = 0
    inputs = _inputs(model)
    heads, neurons = _masks(empty_layer=empty_layer)
    gates = UnitGates.attach(model)
    gates.set_masks(heads, neurons)
    gated_logits, gated_grads = _loss_and_grads(model, inputs)
    with gates.sliced(model):
        sliced_logits, sliced_grads = _loss_and_grads(model, inputs)
    torch.testing.assert_close(sliced_logits, gated_logits, atol=1e-5, rtol=0)
    assert sliced_grads.keys() == gated_grads.keys()
    for name, grad in gated_grads.items():
        torch.testing.assert_close(sliced_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # a removed unit's weights get no gradient from the sliced forward (as with the gate at 0)
    first = transformer_blocks(model)[0]
    removed = (neurons[0] == 0).nonzero().flatten()
    ffn_in = dict(model.named_parameters())
    name = next(n for n, p in ffn_in.items() if p is first.ffn_in.weight)
    axis = 1 if kind == "gpt2" else 0
    assert sliced_grads[name].index_select(axis, removed).abs().sum() == 0

    compacted = copy.deepcopy(model)
    compacted.unit_gates.compact(compacted)
    with torch.no_grad():
        torch.testing.assert_close(compacted(**inputs).logits, sliced_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_the_model_is_unchanged_after_the_context(kind):
    model, _ = tiny_model(kind)
    model.config.pad_token_id = 0
    model.eval()
    inputs = _inputs(model)
    with torch.no_grad():
        before = model(**inputs).logits
    heads, neurons = _masks()
    blocks = transformer_blocks(model)
    with sliced_units(model, heads, neurons):
        assert blocks[0].num_heads == int(heads[0].sum())
    assert all(b.num_heads == 4 for b in blocks)
    assert not any("forward" in vars(m) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, before, atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="inside"), sliced_units(model, heads, neurons):
        raise RuntimeError("inside")  # an error in the body restores the model too
    assert not any("forward" in vars(m) for m in model.modules()) and all(b.num_heads == 4 for b in blocks)


def test_sliced_forward_is_cheaper():
    """The sliced 90%-sparse forward does about a tenth of the block FLOPs: it must beat the gated one clearly."""
    import time

    model, _ = tiny_model("bert", hidden_size=256, intermediate_size=1024, num_attention_heads=8)
    model.eval()
    ids = torch.randint(3, model.config.vocab_size, (16, 64))
    gates = UnitGates.attach(model)
    keep = torch.zeros(2, 8)
    keep[:, 0] = 1.0
    neurons = torch.zeros(2, 1024)
    neurons[:, :102] = 1.0
    gates.set_masks(keep, neurons)

    def seconds(sliced: bool) -> float:
        start = time.process_time()
        with torch.no_grad(), gates.sliced(model) if sliced else torch.no_grad():
            for _ in range(3):
                model(input_ids=ids)
        return time.process_time() - start

    times = {True: [], False: []}
    for _ in range(5):
        for sliced in (False, True):
            times[sliced].append(seconds(sliced))
    assert sorted(times[True])[2] < 0.8 * sorted(times[False])[2]


def test_bad_input_is_refused():
    model, _ = tiny_model("bert")
    heads, neurons = _masks()
    with pytest.raises(ValueError, match="masks must have shapes"):
        with sliced_units(model, heads[:1], neurons):
            pass
    masked, _ = tiny_model("bert")
    mask_linears(masked)
    assert "MaskedLinear" in can_slice(transformer_blocks(masked))
    with pytest.raises(ValueError, match="cannot slice .*MaskedLinear"):
        with sliced_units(masked, heads, neurons):
            pass
    rows = UnitGates.attach(model, num_masks=2)
    with pytest.raises(MethodError, match="one fixed mask row"):
        with rows.sliced(model):
            pass
    other, _ = tiny_model("bert")
    movement = UnitGates.attach(other, scores="movement")
    movement.learning = True
    with pytest.raises(MethodError, match="one fixed mask row"):
        with movement.sliced(other):
            pass
    assert rows.gates.active and movement.gates.active
