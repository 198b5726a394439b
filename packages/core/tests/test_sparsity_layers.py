"""MaskedLinear (nn.Linear and GPT-2 Conv1D layouts), movement gradients, mask_linears, set_sparsity."""

import re

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from plmkit.core.sparsity import (
    MaskedLinear,
    frozen_masks,
    mask_linears,
    masked_layers,
    set_sparsity,
    set_threshold,
)
from plmkit.core.testing import tiny_model


def _inputs(model, batch=2, length=9):
    ids = torch.randint(
        3, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0)
    )
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("layer", [nn.Linear(12, 7), Conv1D(7, 12)], ids=["linear", "conv1d"])
@pytest.mark.parametrize("scorer", ["magnitude", "movement"])
def test_unpruned_layer_reproduces_the_original_exactly(layer, scorer):
    x = torch.randn(3, 4, 12)
    masked = MaskedLinear.from_linear(layer, scorer=scorer)
    assert torch.equal(masked(x), layer(x))
    assert masked.weight is layer.weight and masked.bias is layer.bias
    expected = {"bias", "weight", "pruned_count", "mask_threshold"} | ({"scores"} if scorer == "movement" else set())
    assert set(masked.state_dict()) == expected
    assert (masked.in_features, masked.out_features) == (12, 7)


@pytest.mark.parametrize("transposed", [False, True])
def test_movement_scores_get_w_times_grad_of_masked_weight(transposed):
    torch.manual_seed(0)
    layer = Conv1D(6, 10) if transposed else nn.Linear(10, 6)
    masked = MaskedLinear.from_linear(layer, scorer="movement", sparsity=0.5)
    with torch.no_grad():
        masked.scores.normal_()
    x, upstream = torch.randn(5, 10), torch.randn(5, 6)
    (masked(x) * upstream).sum().backward()
    # y = x W'^T + b with W' = M * W  =>  dL/dW' = upstream^T x (Linear layout), transposed for Conv1D.
    grad_masked_weight = upstream.t() @ x
    if transposed:
        grad_masked_weight = grad_masked_weight.t()
    mask = masked.mask().detach()
    assert int((mask == 0).sum()) == 30
    torch.testing.assert_close(masked.scores.grad, grad_masked_weight * layer.weight.detach())
    torch.testing.assert_close(layer.weight.grad, grad_masked_weight * mask)


def test_magnitude_scorer_keeps_the_largest_weights_without_extra_parameters():
    layer = nn.Linear(20, 10)
    masked = MaskedLinear.from_linear(layer, sparsity=0.9)
    mask = masked.mask()
    assert int((mask == 0).sum()) == 180
    assert layer.weight.abs()[mask == 1].min() > layer.weight.abs()[mask == 0].max()
    assert [name for name, _ in masked.named_parameters()] == ["weight", "bias"]
    assert not mask.requires_grad


def test_sparsity_setter_validates_and_counts():
    masked = MaskedLinear.from_linear(nn.Linear(10, 10))
    masked.sparsity = 0.37
    assert masked.num_pruned == 37
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=re.escape(str(bad))):
            masked.sparsity = bad


@pytest.mark.parametrize("kind, per_layer", [("bert", 6), ("xlmr", 6), ("gpt2", 4)])
def test_mask_linears_default_targets_only_the_blocks(kind, per_layer):
    model, _ = tiny_model(kind)
    model.eval()
    inputs = _inputs(model)
    before = model(**inputs).logits
    names = mask_linears(model, scorer="movement")
    assert len(names) == per_layer * model.config.num_hidden_layers
    assert all(".layer." in n or n.startswith("transformer.h.") for n in names)
    assert not any(
        word in n for n in names for word in ("embeddings", "pooler", "classifier", "score", "lm_head")
    )
    assert torch.equal(model(**inputs).logits, before)
    assert mask_linears(model) == []  # already masked layers are left alone


def test_mask_linears_with_patterns_or_callable():
    model, _ = tiny_model("bert")
    assert mask_linears(model, ["*.attention.self.query"]) == [
        "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.1.attention.self.query",
    ]
    names = mask_linears(model, lambda name, module: name.endswith("intermediate.dense"), scorer="movement")
    assert len(names) == 2 and all(isinstance(model.get_submodule(n), MaskedLinear) for n in names)


def test_set_sparsity_per_matrix_versus_global():
    model, _ = tiny_model("bert")
    mask_linears(model, scorer="movement")
    layers = [m for _, m in masked_layers(model)]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i, layer in enumerate(layers):  # later matrices get larger scores
            layer.scores.copy_(torch.randn(layer.scores.shape, generator=gen) + i)
    total = sum(m.weight.numel() for m in layers)

    set_sparsity(model, 0.5)
    zeros = [int((m.mask() == 0).sum()) for m in layers]
    assert zeros == [m.weight.numel() // 2 for m in layers]

    set_sparsity(model, 0.5, ranking="global")
    global_zeros = [int((m.mask() == 0).sum()) for m in layers]
    assert sum(global_zeros) == total // 2
    assert global_zeros != zeros
    assert global_zeros[0] / layers[0].weight.numel() > global_zeros[-1] / layers[-1].weight.numel()

    with pytest.raises(ValueError, match=r"1\.0"):
        set_sparsity(model, 1.0)


def test_threshold_mode_and_set_threshold():
    model, _ = tiny_model("gpt2")
    mask_linears(model, scorer="movement", mode="threshold", sigmoid=True, min_kept_fraction=0.005)
    layers = [m for _, m in masked_layers(model)]
    with torch.no_grad():
        for layer in layers:
            layer.scores.normal_()
    set_threshold(model, 0.5)
    for layer in layers:
        assert torch.equal(layer.mask(), (torch.sigmoid(layer.scores) > 0.5).float())
    set_threshold(model, 0.9999)  # the minimum kept wins: int(0.005 * numel) + 1 entries
    for layer in layers:
        assert int(layer.mask().sum()) == int(0.005 * layer.weight.numel()) + 1


def test_mask_settings_travel_with_the_state_dict():
    torch.manual_seed(0)
    trained = MaskedLinear.from_linear(nn.Linear(10, 6), scorer="movement")
    trained.scores.data.normal_()
    trained.sparsity = 0.7
    fresh = MaskedLinear.from_linear(nn.Linear(10, 6), scorer="movement")
    fresh.load_state_dict(trained.state_dict())
    assert fresh.num_pruned == int(0.7 * 60) and torch.equal(fresh.mask(), trained.mask())


@pytest.mark.parametrize("layer", [nn.Linear(12, 7), Conv1D(7, 12)], ids=["linear", "conv1d"])
@pytest.mark.parametrize("mode", ["topk", "threshold"])
def test_frozen_masks_compute_the_mask_once_per_block_for_no_grad_forwards(layer, mode, monkeypatch):
    masked = MaskedLinear.from_linear(layer, scorer="movement", mode=mode, sparsity=0.5, threshold=0.1)
    with torch.no_grad():
        masked.scores.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, 12)
    with torch.no_grad():
        expected = masked(x)
    calls = []
    original = MaskedLinear.mask
    monkeypatch.setattr(MaskedLinear, "mask", lambda self: calls.append(1) or original(self))
    with frozen_masks(nn.Sequential(masked)), torch.no_grad():
        assert torch.equal(masked(x), expected) and torch.equal(masked(x), expected)
    assert len(calls) == 1
    with frozen_masks(masked):  # forwards with gradient still compute the mask and reach the scores
        masked(x).sum().backward()
        masked(x).sum().backward()
    assert len(calls) == 3 and masked.scores.grad is not None
    with torch.no_grad():  # leaving the block drops the stored weight: a new sparsity applies
        masked.scores.add_(torch.randn_like(masked.scores))
        masked.sparsity, masked.threshold = 0.25, 0.5
        with frozen_masks(masked):
            again = masked(x)
        assert masked._frozen_weight is None and not torch.equal(again, expected)
        torch.testing.assert_close(again, x @ masked.linear_weight().t() + masked.bias, rtol=0, atol=0)


def test_evaluation_inside_the_trainer_uses_frozen_masks(monkeypatch):
    from transformers import TrainingArguments

    from plmkit.core.training import Trainer

    model, _ = tiny_model("bert")
    mask_linears(model, scorer="magnitude", sparsity=0.5)
    seen = []
    original = MaskedLinear.forward
    monkeypatch.setattr(MaskedLinear, "forward", lambda self, x: seen.append(self._frozen) or original(self, x))
    ids = torch.randint(3, model.config.vocab_size, (6, 5), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": i, "attention_mask": torch.ones_like(i), "labels": torch.tensor(k % 2)}
            for k, i in enumerate(ids)]
    args = TrainingArguments("unused", per_device_eval_batch_size=2, report_to=[], use_cpu=True, disable_tqdm=True)
    Trainer(model, args).evaluate(data)
    assert seen and all(seen)
    assert all(not layer._frozen and layer._frozen_weight is None for _, layer in masked_layers(model))
