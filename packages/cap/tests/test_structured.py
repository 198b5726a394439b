"""CAP-f's importance and mask selection against the reference's ``prune_utils`` (golden values computed by
running ``calculate_head_and_intermediate_importance``, ``what_to_prune_head`` and ``what_to_prune_mlp`` on
this tiny model, data and old masks, with the task loss)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from plmkit.cap import CAPConfig, StructuredEngine, pruning_sequence
from plmkit.core.testing import tiny_dataset, tiny_model

GOLDEN_HEADS = [[0.4991898, 0.7181454, 0.3538428, 0.3314696], [0.6982152, 0.2554448, 0.4782755, 0.4674357]]
GOLDEN_NEURON_SUM = 11.973434448242188
GOLDEN_NEURONS_LAYER1 = [0.0300651, 0.3289531, 0.0404479, 0.0309812, 0.067244, 0.090327, 0.0142713, 0.3791533]
GOLDEN_NEW_HEADS = [[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]]
GOLDEN_NEW_PRUNED_NEURONS = [
    [*range(20), 27, 36, 38, 42, 46, 47, 50, 57],
    [0, 2, 3, 6, 8, 10, 12, 13, 16, 18, 19, 21, 22, 24, 26, 32, 33, 34, 35, 37, 40, 41, 42, 43, 44, 45, 46, 47, 48,
     49, 50, 51, 53, 55, 58, 63],
]


@pytest.fixture
def engine_and_model():
    model, tokenizer = tiny_model("bert")
    engine = StructuredEngine(CAPConfig(engine="cap-f"))
    engine.prepare(model)
    old_heads, old_neurons = torch.ones(2, 4), torch.ones(2, 64)
    old_heads[0, 1] = old_heads[1, 3] = 0  # 25% of the heads and neurons already pruned
    old_neurons[0, :20] = 0
    old_neurons[1, 40:52] = 0
    engine.set_masks(old_heads, old_neurons)
    data = tiny_dataset(12, 4, seed=0)["train"]
    features = [dict(tokenizer(t), labels=y) for t, y in zip(data["text"], data["label"], strict=True)]
    loader = DataLoader(features, batch_size=4, collate_fn=DataCollatorWithPadding(tokenizer))
    return engine, model, loader


def test_importance_matches_reference(engine_and_model):
    engine, model, loader = engine_and_model
    heads, neurons = engine.importance(model, loader, lambda m, batch: m(**batch).loss)
    torch.testing.assert_close(heads, torch.tensor(GOLDEN_HEADS), atol=2e-6, rtol=1e-5)
    assert neurons.sum().item() == pytest.approx(GOLDEN_NEURON_SUM, rel=1e-5)
    torch.testing.assert_close(neurons[1, :8], torch.tensor(GOLDEN_NEURONS_LAYER1), atol=2e-6, rtol=1e-5)


def test_next_masks_match_reference(engine_and_model):
    engine, model, loader = engine_and_model
    heads, neurons = engine.importance(model, loader, lambda m, batch: m(**batch).loss)
    new_heads, new_neurons = engine.masks_at(heads, neurons, 0.5)  # 25% -> 50% cumulative
    assert new_heads.tolist() == GOLDEN_NEW_HEADS
    assert [sorted((row == 0).nonzero().flatten().tolist()) for row in new_neurons] == GOLDEN_NEW_PRUNED_NEURONS


def test_pruning_sequence_is_cumulative_tenths():
    assert pruning_sequence(0.9, 0.1) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert pruning_sequence(0.75, 0.1) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75]
    assert pruning_sequence(0.0, 0.1) == []
