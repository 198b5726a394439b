"""First-order unit importance of the current sub-network, per mask row (one per language in the per-language
setting), measured on a seeded random sample of the training set through the method context (each process its
share, summed over processes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

from plmkit.core.sparsity import UnitGates
from plmkit.core.training import MethodContext

__all__ = ["LANGUAGE", "importance_batches", "model_inputs", "unit_importance"]

LANGUAGE = "language"
EXAMPLE_ID = "example_id"


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch without the columns that are for the method only (example ids, languages)."""
    return {k: v for k, v in batch.items() if k not in (EXAMPLE_ID, LANGUAGE)}


def importance_batches(ctx: MethodContext, count: int, seed: int) -> Iterator[dict[str, Any]]:
    """``count`` training batches (of the global batch size) drawn at random (seeded) from the training set, collated
    as for training; under DDP each process takes whole batches (importance sums batch-level |gradients|)."""
    data = ctx.train_dataset
    size = ctx.global_train_batch_size
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[: count * size].tolist()
    return ctx.batches(Subset(data, order), batch_size=size, shard="batches")


def _per_language_loss(gates: UnitGates, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """Sum over languages of the mean cross-entropy of that language's examples, each under its own mask row: the
    gradient for row g is the gradient of language g's loss."""
    language = batch[LANGUAGE].long()
    gates.use_rows(language)
    logits = model(**model_inputs(batch)).logits.float()
    total = logits.sum() * 0.0
    for row in range(gates.num_masks):
        chosen = language == row
        if chosen.any():
            total = total + F.cross_entropy(logits[chosen], batch["labels"][chosen])
    return total


def unit_importance(
    ctx: MethodContext, gates: UnitGates, batches: Iterator[dict[str, Any]], per_language: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer-normalised |dL/dgate| of the live units summed over ``batches``: heads [G, L, H], neurons [G, L, F].
    Units the current mask has removed get -inf, so cumulative pruning never brings them back."""

    def loss_fn(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        if per_language:
            return _per_language_loss(gates, model, batch)
        return model(**model_inputs(batch)).loss

    heads, neurons = gates.importance(ctx.model, batches, loss_fn, normalize="layer", live_only=True,
                                      all_reduce=ctx.all_reduce)
    return (heads.masked_fill(gates.head_mask == 0, float("-inf")),
            neurons.masked_fill(gates.neuron_mask == 0, float("-inf")))
