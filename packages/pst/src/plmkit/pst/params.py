"""Trainable-parameter accounting for PST against two denominators:

- the model: every parameter of the exported (plain) model, i.e. without the PST tensors;
- movement pruning (MvP): it trains every weight plus one score per pruned weight, so its trainable count is
  (model parameters) + (pruned weights). The paper's "1.5% trainable parameters" on BERT-base matches this one.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from plmkit.pst.layers import pst_layers

__all__ = ["pst_parameter_counts", "format_parameter_counts", "pst_factor_count"]


def pst_factor_count(out_features: int, in_features: int, rank_uv: int, rank_score: int) -> int:
    """(r1 + r2 + 1)(n + k): U, V, A, B, R, C of one n x k matrix."""
    return (rank_uv + rank_score + 1) * (out_features + in_features)


def pst_parameter_counts(model: nn.Module) -> dict[str, Any]:
    """Counts and shares for a model whose target linears are PST layers (meta-device models work too)."""
    layers = [layer for _, layer in pst_layers(model)]
    pst_ids = {id(p) for layer in layers for p in (layer.U, layer.V, layer.A, layer.B, layer.R, layer.C)}
    pst = sum(layer.trainable_count() for layer in layers)
    model_params = sum(p.numel() for p in model.parameters() if id(p) not in pst_ids)
    pruned = sum(layer.weight.numel() for layer in layers)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    movement = model_params + pruned
    return {
        "pst_parameters": pst,
        "trainable_parameters": trainable,
        "model_parameters": model_params,
        "pruned_weights": pruned,
        "movement_pruning_trainable_parameters": movement,
        "trainable_share_of_model": trainable / model_params,
        "trainable_share_of_movement_pruning": trainable / movement,
        "pst_share_of_pruned_weights": pst / pruned if pruned else 0.0,
    }


def format_parameter_counts(counts: dict[str, Any]) -> str:
    """One line in the style of peft's ``print_trainable_parameters``, plus the movement-pruning denominator."""
    return (
        f"trainable params: {counts['trainable_parameters']:,} || all params: {counts['model_parameters']:,} || "
        f"trainable%: {100 * counts['trainable_share_of_model']:.4f} || movement pruning trains "
        f"{counts['movement_pruning_trainable_parameters']:,} (weights + scores): "
        f"{100 * counts['trainable_share_of_movement_pruning']:.4f}% of that"
    )
