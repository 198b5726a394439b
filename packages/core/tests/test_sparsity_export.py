"""export_dense: masked models become plain transformers checkpoints; sparsity_report counts."""

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification
from transformers.pytorch_utils import Conv1D

from plmkit.core.sparsity import (
    MaskedLinear,
    export_dense,
    format_report,
    mask_linears,
    masked_layers,
    set_sparsity,
    sparsity_report,
)
from plmkit.core.testing import tiny_model


def _inputs(model):
    ids = torch.randint(3, model.config.vocab_size, (3, 8), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _pruned(kind, sparsity, ranking="layer"):
    model, _ = tiny_model(kind)
    model.eval()
    names = mask_linears(model, scorer="movement")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for i, (_, layer) in enumerate(masked_layers(model)):
            layer.scores.copy_(torch.randn(layer.scores.shape, generator=gen) + 0.5 * i)
    set_sparsity(model, sparsity, ranking)
    return model, names


@pytest.mark.parametrize("kind", ["bert", "roberta", "gpt2"])
def test_export_saves_and_reloads_with_plain_transformers(kind, tmp_path):
    model, names = _pruned(kind, 0.7)
    inputs = _inputs(model)
    expected = _logits(model, inputs)
    export_dense(model)
    assert masked_layers(model) == []
    dense_type = Conv1D if kind == "gpt2" else nn.Linear
    assert all(type(model.get_submodule(n)) is dense_type for n in names)
    torch.testing.assert_close(_logits(model, inputs), expected, atol=0, rtol=0)

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(_logits(reloaded, inputs), expected, atol=0, rtol=0)
    for name in names:
        weight = reloaded.get_submodule(name).weight
        assert int((weight == 0).sum()) == int(0.7 * weight.numel())


def test_export_freezes_global_ranking():
    model, names = _pruned("bert", 0.8, ranking="global")
    export_dense(model)
    weights = [model.get_submodule(n).weight for n in names]
    zeros = [int((w == 0).sum()) for w in weights]
    assert sum(zeros) == int(0.8 * sum(w.numel() for w in weights))
    assert len(set(z / w.numel() for z, w in zip(zeros, weights, strict=True))) > 1


def test_sparsity_report_counts_and_table():
    model, names = _pruned("bert", 0.9)
    report = sparsity_report(model)
    masked_numel = sum(model.get_submodule(n).weight.numel() for n in names)
    pruned = sum(int(0.9 * model.get_submodule(n).weight.numel()) for n in names)
    scores = sum(m.scores.numel() for _, m in masked_layers(model))
    assert report["total_parameters"] == sum(p.numel() for p in model.parameters()) - scores
    assert report["nonzero_parameters"] == report["total_parameters"] - pruned
    assert report["encoder_linear_parameters"] == masked_numel
    assert report["encoder_linear_sparsity"] == pytest.approx(pruned / masked_numel)
    assert report["layers"]["bert.encoder.layer.0.intermediate.dense"]["shape"] == [64, 32]
    assert report["layers"]["bert.pooler.dense"]["sparsity"] == 0.0
    assert all(report["layers"][n]["masked"] for n in names)
    flops = report["linear_flops_per_token"]
    assert flops["dense"] - flops["effective"] == 2 * pruned
    table = format_report(report)
    assert "bert.encoder.layer.1.output.dense" in table and "encoder linear sparsity" in table
    # Exporting changes nothing the report sees, except that the scores are gone.
    export_dense(model)
    after = sparsity_report(model)
    assert after["nonzero_parameters"] == report["nonzero_parameters"]
    assert not any(isinstance(m, MaskedLinear) for m in model.modules())
