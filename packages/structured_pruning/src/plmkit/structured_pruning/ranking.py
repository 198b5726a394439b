"""First-order unit importance of the current sub-network, per mask row (one per language in the per-language
setting), measured with the core's ``first_order_importance`` through a temporary set of core gates."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from plmkit.core.sparsity import add_structural_gates, first_order_importance
from plmkit.structured_pruning.gating import UnitGates

__all__ = ["importance_batches", "unit_importance"]


def importance_batches(train_dataloader: DataLoader, count: int, batch_size: int, seed: int) -> list[dict[str, Any]]:
    """``count`` shuffled batches of the training set, drawn from a loader of its own (the Trainer's running
    iterator is left alone)."""
    loader = DataLoader(
        train_dataloader.dataset,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=train_dataloader.collate_fn,
        generator=torch.Generator().manual_seed(seed),
    )
    return list(itertools.islice(loader, count))


def _language_loss(language: int, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    """Mean cross-entropy over the batch's examples of one language (zero, still on the graph, if it has none)."""
    logits = model(**batch).logits.float()
    chosen = torch.as_tensor(batch["language"], device=logits.device) == language
    if not chosen.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[chosen], batch["labels"][chosen])


def unit_importance(
    model: nn.Module, unit_gates: UnitGates, batches: list[dict[str, Any]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer-normalised |dL/dgate| summed over ``batches``: heads [G, L, H], neurons [G, L, F].

    Row g uses the loss of language g's examples under language g's mask (one row, all examples, when
    shared). Units the current mask has removed get -inf, so cumulative pruning never brings them back.
    """
    probe = add_structural_gates(model)
    try:
        rows = []
        for language in range(unit_gates.num_masks):
            loss_fn = None if unit_gates.num_masks == 1 else (lambda m, b, g=language: _language_loss(g, m, b))
            rows.append(first_order_importance(model, probe, batches, loss_fn=loss_fn, normalize="layer"))
    finally:
        probe.remove()
    heads = torch.stack([h for h, _ in rows]).masked_fill(unit_gates.head_mask == 0, float("-inf"))
    neurons = torch.stack([n for _, n in rows]).masked_fill(unit_gates.neuron_mask == 0, float("-inf"))
    return heads, neurons
