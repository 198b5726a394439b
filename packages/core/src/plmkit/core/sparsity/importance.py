"""First-order importance of heads and FFN neurons, and keep-masks from it (Michel et al. 2019; CAP-f, Xu et al.
2022, and ContrastivePruning's prune_utils.py): I = sum over batches of |dL/d gate|, each layer's vector optionally divided by its L2 norm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import nn

from plmkit.core.sparsity.gates import StructuralGates
from plmkit.core.sparsity.masks import num_pruned

__all__ = ["first_order_importance", "units_to_keep"]


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def first_order_importance(
    model: nn.Module,
    gates: StructuralGates,
    dataloader: Iterable[Mapping[str, Any]],
    loss_fn: Callable[[nn.Module, dict[str, Any]], torch.Tensor] | None = None,
    normalize: Literal["layer"] | None = "layer",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (head_importance [L, H], neuron_importance [L, F]).

    The model runs in eval mode (dropout off, as in CAP) and gradients are taken with respect to the gates
    only, so the model's parameters receive no ``.grad``. The loss is ``model(**batch).loss`` (batches must
    carry labels) unless ``loss_fn(model, batch)`` is given, e.g. CAP's full loss. ``normalize="layer"``
    divides each layer's importances by their L2 norm so layers compete on equal terms in global ranking.
    """
    if normalize not in ("layer", None):
        raise ValueError(f"normalize must be 'layer' or None, got {normalize!r}")
    gate_params = [gates.head_gates, gates.neuron_gates]
    was_training, grad_flags = model.training, [p.requires_grad for p in gate_params]
    device = next(model.parameters()).device
    importance = [torch.zeros_like(p, dtype=torch.float32) for p in gate_params]
    model.eval()
    try:
        for p in gate_params:
            p.requires_grad_(True)
        with torch.enable_grad():
            for raw_batch in dataloader:
                batch = _to_device(raw_batch, device)
                loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
                for total, grad in zip(importance, torch.autograd.grad(loss, gate_params), strict=True):
                    total.add_(grad.abs().float())
    finally:
        model.train(was_training)
        for p, flag in zip(gate_params, grad_flags, strict=True):
            p.requires_grad_(flag)
    if normalize == "layer":
        importance = [imp / (imp.norm(dim=-1, keepdim=True) + 1e-20) for imp in importance]
    return importance[0], importance[1]


def units_to_keep(
    importance: torch.Tensor,
    sparsity: float,
    scope: Literal["global", "layer"] = "global",
    min_per_layer: int = 0,
) -> torch.Tensor:
    """0/1 keep-mask [L, U] that prunes the floor(sparsity * count) least important units.

    ``scope="global"`` ranks all layers together (CAP-f), ``"layer"`` prunes the same fraction in each layer.
    The ``min_per_layer`` most important units of every layer are never pruned (CAP keeps each layer's top
    head: pass 1 for heads); when that conflicts with the sparsity, the minimum wins and fewer units are
    pruned. For iterative pruning, give already-pruned units importance -inf: they rank first, so a cumulative
    sparsity prunes them again plus the increment from the live units.
    """
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if importance.dim() != 2:
        raise ValueError(f"importance must be [num_layers, units], got shape {tuple(importance.shape)}")
    scores = importance.detach().float().clone()
    layers, units = scores.shape
    protect = min(min_per_layer, units)
    if protect > 0:
        scores.scatter_(1, scores.topk(protect, dim=1).indices, float("inf"))
    keep = torch.ones_like(scores)
    if scope == "global":
        k = min(num_pruned(scores.numel(), sparsity), scores.numel() - protect * layers)
        keep.view(-1)[scores.view(-1).argsort(stable=True)[:k]] = 0.0
    else:
        k = min(num_pruned(units, sparsity), units - protect)
        keep.scatter_(1, scores.argsort(dim=1, stable=True)[:, :k], 0.0)
    return keep
