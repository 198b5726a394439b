"""Head/neuron gates, first-order importance, keep-masks and physical compaction."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from plmkit.core.sparsity import (
    add_structural_gates,
    compact_model,
    first_order_importance,
    load_compacted,
    mask_linears,
    sparsity_report,
    transformer_blocks,
    units_to_keep,
)
from plmkit.core.testing import tiny_model

KINDS = ["bert", "roberta", "xlmr", "gpt2"]


def _inputs(model, batch=3, length=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _random_masks(gates, seed=0):
    gen = torch.Generator().manual_seed(seed)
    heads = (torch.rand(gates.head_gates.shape, generator=gen) > 0.4).float()
    heads[0] = 0.0
    heads[0, 2] = 1.0  # layer 0 keeps a single head
    heads[1, 0] = 1.0
    neurons = (torch.rand(gates.neuron_gates.shape, generator=gen) > 0.5).float()
    return heads, neurons


@pytest.mark.parametrize("kind", KINDS)
def test_gates_at_one_change_nothing_and_remove_restores(kind):
    model, _ = tiny_model(kind)
    model.eval()
    inputs = _inputs(model)
    before = _logits(model, inputs)
    gates = add_structural_gates(model)
    assert gates.head_gates.shape == (2, 4) and gates.neuron_gates.shape == (2, 64)
    assert gates.head_gates.requires_grad and torch.equal(gates.head_gates, torch.ones(2, 4))
    assert torch.equal(_logits(model, inputs), before)
    gates.set_masks(torch.zeros(2, 4), torch.zeros(2, 64))
    assert not torch.allclose(_logits(model, inputs), before)
    gates.remove()
    assert torch.equal(_logits(model, inputs), before)
    assert "head_gates" not in str(list(model.state_dict()))


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_gate_zero_equals_zeroing_the_unit_weights(kind):
    # A head's context is probs @ V_h, so zeroing V_h's rows removes it; an FFN neuron with zero input row and
    # bias outputs act(0) = 0. Both must match a zero gate, under the default SDPA attention.
    model, _ = tiny_model(kind)
    model.eval()
    assert model.config._attn_implementation == "sdpa"
    inputs = _inputs(model)
    gates = add_structural_gates(model)
    gates.set_masks(torch.tensor([[1.0, 0, 1, 1], [1, 1, 1, 0]]), torch.ones(2, 64))
    gates.neuron_gates.data[1, 5] = 0.0
    gated = _logits(model, inputs)
    gates.remove()
    blocks, d, hidden = transformer_blocks(model), 8, 32
    with torch.no_grad():
        for layer, head in ((0, 1), (1, 3)):
            dims = slice(head * d, (head + 1) * d)
            if kind == "gpt2":
                value = slice(2 * hidden + head * d, 2 * hidden + (head + 1) * d)
                blocks[layer].qkv[0].weight[:, value] = 0
                blocks[layer].qkv[0].bias[value] = 0
            else:
                blocks[layer].qkv[2].weight[dims] = 0
                blocks[layer].qkv[2].bias[dims] = 0
        ffn_in = blocks[1].ffn_in
        (ffn_in.weight[:, 5] if kind == "gpt2" else ffn_in.weight[5]).zero_()
        ffn_in.bias[5] = 0
    torch.testing.assert_close(_logits(model, inputs), gated, atol=1e-6, rtol=0)


def test_first_order_importance_is_sum_of_abs_gate_gradients():
    model, _ = tiny_model("bert")
    gates = add_structural_gates(model)
    batches = [{**_inputs(model, seed=s), "labels": torch.tensor([0, 1, 1])} for s in (1, 2)]
    model.train()
    heads, neurons = first_order_importance(model, gates, batches, normalize=None)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    expected_h, expected_n = torch.zeros(2, 4), torch.zeros(2, 64)
    for batch in batches:
        gh, gn = torch.autograd.grad(model(**batch).loss, [gates.head_gates, gates.neuron_gates])
        expected_h += gh.abs()
        expected_n += gn.abs()
    torch.testing.assert_close(heads, expected_h)
    torch.testing.assert_close(neurons, expected_n)

    heads_n, neurons_n = first_order_importance(model, gates, batches)
    torch.testing.assert_close(heads_n.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(heads_n, expected_h / expected_h.norm(dim=1, keepdim=True))
    torch.testing.assert_close(neurons_n.norm(dim=1), torch.ones(2))

    calls = []
    custom = lambda m, b: (calls.append(1), m(**b).logits.sum())[1]  # noqa: E731
    first_order_importance(model, gates, batches[:1], loss_fn=custom)
    assert calls == [1]


def test_units_to_keep_global_layer_and_minimum():
    importance = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.05, 0.5, 0.6, 0.7]])
    assert units_to_keep(importance, 0.5).tolist() == [[0, 0, 0, 1], [0, 1, 1, 1]]
    assert units_to_keep(importance, 0.5, scope="layer").tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]
    assert units_to_keep(importance, 0.0).tolist() == [[1] * 4] * 2
    # Global 75% prunes 6 of 8; each layer keeps its top unit anyway.
    shifted = importance + torch.tensor([[1.0], [0.0]])
    assert units_to_keep(shifted, 0.75, min_per_layer=1).tolist() == [[0, 0, 0, 1], [0, 0, 0, 1]]
    assert units_to_keep(shifted, 0.75).tolist() == [[0, 0, 1, 1], [0, 0, 0, 0]]
    # When the minimum conflicts with the sparsity, the minimum wins.
    assert units_to_keep(importance, 0.9, min_per_layer=1).sum() == 2
    # Iterative pruning: dead units (importance -inf) are pruned first.
    dead = importance.clone()
    dead[1, 3] = float("-inf")
    assert units_to_keep(dead, 0.25).tolist() == [[1, 1, 1, 1], [0, 1, 1, 0]]


@pytest.mark.parametrize("kind", KINDS)
def test_compacted_model_matches_gated_model(kind):
    model, _ = tiny_model(kind)
    model.eval()
    inputs = _inputs(model)
    gates = add_structural_gates(model)
    heads, neurons = _random_masks(gates)
    gates.set_masks(heads, neurons)
    gated = _logits(model, inputs)
    report = sparsity_report(model, gates)
    assert report["heads_kept"] == heads.sum(dim=1).tolist()
    gates.remove()
    params_before = sum(p.numel() for p in model.parameters())

    compact_model(model, heads, neurons)
    torch.testing.assert_close(_logits(model, inputs), gated, atol=1e-5, rtol=0)
    blocks = transformer_blocks(model)
    assert [b.num_heads for b in blocks] == heads.sum(dim=1).int().tolist()
    assert [b.intermediate_size for b in blocks] == neurons.sum(dim=1).int().tolist()
    assert blocks[0].num_heads == 1
    assert sum(p.numel() for p in model.parameters()) < params_before
    assert model.config.plmkit_compaction["kept_heads"][0] == [2]
    # The gated report's effective FLOPs equal the compacted model's dense FLOPs.
    assert (
        sparsity_report(model)["linear_flops_per_token"]["dense"]
        == report["linear_flops_per_token"]["effective"]
    )
    with pytest.raises(ValueError, match="already compacted"):
        compact_model(model, heads, neurons)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_compaction_of_a_layer_without_heads_or_neurons(kind, tmp_path):
    model, _ = tiny_model(kind)
    model.eval()
    inputs = _inputs(model)
    gates = add_structural_gates(model)
    heads, neurons = torch.tensor([[0.0, 0, 0, 0], [1, 0, 1, 0]]), torch.ones(2, 64)
    neurons[1] = 0.0
    gates.set_masks(heads, neurons)
    gated = _logits(model, inputs)
    gates.remove()
    compact_model(model, heads, neurons)
    torch.testing.assert_close(_logits(model, inputs), gated, atol=1e-5, rtol=0)
    assert model.config.plmkit_compaction == {"kept_heads": [[], [0, 2]], "intermediate_sizes": [64, 0]}
    model.save_pretrained(tmp_path)
    reloaded = load_compacted(AutoModelForSequenceClassification, tmp_path)
    torch.testing.assert_close(_logits(reloaded, inputs), gated, atol=1e-5, rtol=0)


def test_compaction_refuses_masked_layers():
    model, _ = tiny_model("bert")
    mask_linears(model)
    with pytest.raises(TypeError, match="export_dense"):
        compact_model(model, torch.ones(2, 4), torch.ones(2, 64))


@pytest.mark.parametrize(
    "kind, model_class", [("bert", AutoModelForSequenceClassification), ("gpt2", AutoModelForCausalLM)]
)
def test_compacted_model_saves_and_reloads(kind, model_class, tmp_path):
    task = "causal-lm" if kind == "gpt2" else "sequence-classification"
    model, _ = tiny_model(kind, head=task)
    model.eval()
    inputs = _inputs(model)
    gates = add_structural_gates(model)
    heads, neurons = _random_masks(gates, seed=1)
    gates.remove()
    compact_model(model, heads, neurons)
    expected = _logits(model, inputs)
    model.save_pretrained(tmp_path)
    reloaded = load_compacted(model_class, tmp_path)
    torch.testing.assert_close(_logits(reloaded, inputs), expected, atol=0, rtol=0)
    with pytest.raises(ValueError, match="plmkit_compaction"):
        load_compacted(model_class, tmp_path, plmkit_compaction=None)
