"""Sparsity, parameter and FLOP accounting for pruned models (the role of movement pruning's
``counts_parameters.py``), with an optional view of structural gates."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from plmkit.core.sparsity.compaction import structural_keep
from plmkit.core.sparsity.gates import StructuralGates, transformer_blocks
from plmkit.core.sparsity.layers import DEFAULT_TARGETS, MaskedLinear, effective_weight, is_linear

__all__ = ["sparsity_report", "format_report"]


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def sparsity_report(
    model: nn.Module, gates: StructuralGates | None = None, targets: Sequence[str] = DEFAULT_TARGETS
) -> dict[str, Any]:
    """Per-layer and total sparsity of ``model``'s linear layers.

    Keys:
    - ``layers``: name -> shape [out, in], masked, numel, nonzero, sparsity;
    - ``total_parameters``: what an exported model stores (movement scores excluded);
    - ``nonzero_parameters``: only zeros inside linear weights are subtracted (embeddings, norms and biases
      count as dense);
    - ``encoder_linear_parameters`` / ``encoder_linear_sparsity``: linears whose names match ``targets``
      (default: the transformer blocks);
    - ``linear_flops_per_token`` {dense, effective}: 2 FLOPs per (nonzero) weight of every linear layer;
      attention scores are excluded, pooler and classifier (once per sequence) are counted per token;
    - with ``gates``: ``heads_kept`` and ``neurons_kept`` per layer, and effective FLOPs that also skip the
      rows and columns of gated-off units.
    """
    layers: dict[str, dict[str, Any]] = {}
    effective_nonzero: dict[nn.Module, int] = {}
    for name, module in model.named_modules():
        if not (isinstance(module, MaskedLinear) or is_linear(module)):
            continue
        weight = effective_weight(module)
        nonzero = int(torch.count_nonzero(weight))
        layers[name] = {
            "shape": list(weight.shape),
            "masked": isinstance(module, MaskedLinear),
            "numel": weight.numel(),
            "nonzero": nonzero,
            "sparsity": 1.0 - _ratio(nonzero, weight.numel()),
        }
        effective_nonzero[module] = nonzero

    report: dict[str, Any] = {"layers": layers}
    if gates is not None:
        head_keep, neuron_keep = gates.head_gates.detach() != 0, gates.neuron_gates.detach() != 0
        for block, heads, neurons in zip(transformer_blocks(model), head_keep, neuron_keep, strict=True):
            for module, out_keep, in_keep in structural_keep(block, heads, neurons):
                weight = effective_weight(module)
                if out_keep is not None:
                    weight = weight[out_keep.to(weight.device)]
                if in_keep is not None:
                    weight = weight[:, in_keep.to(weight.device)]
                effective_nonzero[module] = int(torch.count_nonzero(weight))
        report["heads_kept"] = head_keep.sum(dim=1).tolist()
        report["neurons_kept"] = neuron_keep.sum(dim=1).tolist()

    total = sum(p.numel() for name, p in model.named_parameters() if not name.endswith(".scores"))
    zeros = sum(info["numel"] - info["nonzero"] for info in layers.values())
    encoder = [info for name, info in layers.items() if any(fnmatch.fnmatchcase(name, t) for t in targets)]
    encoder_numel = sum(info["numel"] for info in encoder)
    report.update(
        total_parameters=total,
        nonzero_parameters=total - zeros,
        encoder_linear_parameters=encoder_numel,
        encoder_linear_sparsity=1.0 - _ratio(sum(info["nonzero"] for info in encoder), encoder_numel),
        linear_flops_per_token={
            "dense": 2 * sum(info["numel"] for info in layers.values()),
            "effective": 2 * sum(effective_nonzero.values()),
        },
    )
    return report


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of :func:`sparsity_report`'s output."""
    width = max([len("layer"), *(len(name) for name in report["layers"])])
    lines = [f"{'layer':<{width}}  {'shape':>12}  {'nonzero':>10}  {'sparsity':>8}"]
    for name, info in report["layers"].items():
        shape = "x".join(str(d) for d in info["shape"])
        mark = "*" if info["masked"] else " "
        lines.append(f"{name:<{width}}  {shape:>12}  {info['nonzero']:>10,}  {info['sparsity']:>8.2%}{mark}")
    flops = report["linear_flops_per_token"]
    lines += [
        "(* = masked layer)",
        f"parameters: {report['total_parameters']:,} total, {report['nonzero_parameters']:,} nonzero",
        f"encoder linear sparsity: {report['encoder_linear_sparsity']:.2%} "
        f"of {report['encoder_linear_parameters']:,} weights",
        f"linear FLOPs/token: {flops['dense']:,} dense, {flops['effective']:,} effective "
        f"({_ratio(flops['effective'], flops['dense']):.2%})",
    ]
    if "heads_kept" in report:
        lines.append(
            f"heads kept per layer: {report['heads_kept']}; FFN neurons kept: {report['neurons_kept']}"
        )
    return "\n".join(lines)
