"""Fold masks into plain dense weights so a pruned model saves and loads without plmkit (PST's
``save_sparse_model`` in AliceMind's S4/PST; the movement-pruning ``bertarize`` step)."""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from plmkit.core.sparsity.layers import MaskedLinear, masked_layers

__all__ = ["export_dense"]


@torch.no_grad()
def _dense_module(layer: MaskedLinear) -> nn.Module:
    # Built on the meta device: the random initialisation would be overwritten anyway.
    with torch.device("meta"):
        if layer.transposed:
            dense: nn.Module = Conv1D(layer.out_features, layer.in_features)
        else:
            dense = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    dense.weight = nn.Parameter(layer.masked_weight().detach().clone(), layer.weight.requires_grad)
    dense.bias = layer.bias
    return dense


def export_dense(model: nn.Module) -> nn.Module:
    """Replace every MaskedLinear by an nn.Linear (Conv1D for GPT-2) holding mask * W, in place.

    Scores are dropped and the current masks (including a global-ranking threshold) are frozen into zeros,
    so ``save_pretrained`` writes a standard checkpoint that plain ``from_pretrained`` reads.
    Returns ``model``.
    """
    for name, layer in masked_layers(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _dense_module(layer))
    return model
