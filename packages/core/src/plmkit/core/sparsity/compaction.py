"""Physically remove gated-off attention heads and FFN neurons (BERT/RoBERTa/XLM-R and GPT-2).

A removed head loses its rows in Q, K and V (GPT-2: the matching columns of each third of the fused
``c_attn``) and its input columns in the attention output projection; a removed neuron loses its row in the
FFN input projection and its column in the FFN output projection. The compacted model computes what the
gated model computes (up to float summation order) with fewer parameters and FLOPs.

Reload support: transformers 5 no longer honours ``config.pruned_heads``, so ``compact_model`` records the
structure in ``config.plmkit_compaction`` = {"kept_heads": per-layer lists of original head indices,
"intermediate_sizes": per-layer counts of kept FFN neurons}, which ``save_pretrained`` writes to config.json.
Plain ``from_pretrained`` then fails on the shape mismatch; :func:`load_compacted` rebuilds the compacted
shapes from that record and loads the safetensors weights (no other format).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from plmkit.core.sparsity.gates import BlockParts, transformer_blocks
from plmkit.core.sparsity.layers import is_linear

__all__ = ["compact_model", "load_compacted", "structural_keep"]

RECORD = "plmkit_compaction"


def structural_keep(
    block: BlockParts, head_keep: torch.Tensor, neuron_keep: torch.Tensor
) -> list[tuple[Any, torch.Tensor | None, torch.Tensor | None]]:
    """For each linear of ``block``: (module, kept output dims, kept input dims); bool vectors, None = all."""
    dims = head_keep.bool().repeat_interleave(block.head_dim)
    qkv_out = dims.repeat(3) if block.fused_qkv else dims
    neurons = neuron_keep.bool()
    return [
        *((m, qkv_out, None) for m in block.qkv),
        (block.attn_out, None, dims),
        (block.ffn_in, neurons, None),
        (block.ffn_out, None, neurons),
    ]


@torch.no_grad()
def _slice_linear(module: Any, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None) -> None:
    """Keep only the given output/input dims of an nn.Linear ([out, in]) or Conv1D ([in, out]), in place."""
    out_axis = 1 if isinstance(module, Conv1D) else 0
    weight = module.weight.detach()
    if out_idx is not None:
        weight = weight.index_select(out_axis, out_idx)
        if module.bias is not None:
            module.bias = nn.Parameter(module.bias.detach()[out_idx].clone(), module.bias.requires_grad)
    if in_idx is not None:
        weight = weight.index_select(1 - out_axis, in_idx)
    module.weight = nn.Parameter(weight.clone(), module.weight.requires_grad)
    if isinstance(module, Conv1D):
        module.nx, module.nf = weight.shape
    else:
        module.out_features, module.in_features = weight.shape


def index_plan(
    block: BlockParts, head_keep: torch.Tensor, neuron_keep: torch.Tensor
) -> tuple[list[tuple[Any, torch.Tensor | None, torch.Tensor | None]], int, bool, bool]:
    """What compacting ``block`` to the kept units means: for each linear (module, kept output indices, kept input
    indices; None = all), the kept head count, and whether the block lost every head / every neuron.

    Width 0 cannot be expressed (attention and Conv1D reshapes with -1 fail on empty tensors). A block losing every
    head (or neuron) keeps unit 0, and the caller zeroes that unit's columns in the output projection: the
    projection then adds exactly its bias, as in the gated model."""
    heads, neurons = head_keep.bool().clone(), neuron_keep.bool().clone()
    no_heads, no_neurons = not heads.any(), not neurons.any()
    heads[0] |= no_heads
    neurons[0] |= no_neurons
    plan = []
    for module, out_keep, in_keep in structural_keep(block, heads, neurons):
        out_idx = None if out_keep is None else out_keep.nonzero().flatten().to(module.weight.device)
        in_idx = None if in_keep is None else in_keep.nonzero().flatten().to(module.weight.device)
        plan.append((module, out_idx, in_idx))
    return plan, int(heads.sum()), no_heads, no_neurons


@torch.no_grad()
def _compact_block(block: BlockParts, head_keep: torch.Tensor, neuron_keep: torch.Tensor) -> None:
    plan, num_heads, no_heads, no_neurons = index_plan(block, head_keep, neuron_keep)
    for module, out_idx, in_idx in plan:
        _slice_linear(module, out_idx, in_idx)
    if no_heads:
        block.attn_out.weight.zero_()
    if no_neurons:
        block.ffn_out.weight.zero_()
    block.set_num_heads(num_heads)


def _validate(blocks: list[BlockParts], head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> None:
    """Raise before touching anything, so a refused compaction leaves the model intact."""
    for block in blocks:
        for module in (*block.qkv, block.attn_out, block.ffn_in, block.ffn_out):
            if not is_linear(module):
                raise TypeError(
                    f"compaction needs nn.Linear or Conv1D, got {type(module).__name__}: "
                    "run export_dense first"
                )
    heads, neurons = {b.num_heads for b in blocks}, {b.intermediate_size for b in blocks}
    if len(heads) != 1 or len(neurons) != 1:
        raise ValueError(
            "model is already compacted (layers differ in width); compact the original model instead"
        )
    expected_h, expected_n = (len(blocks), heads.pop()), (len(blocks), neurons.pop())
    if tuple(head_mask.shape) != expected_h or tuple(neuron_mask.shape) != expected_n:
        raise ValueError(
            f"masks must have shapes {expected_h} and {expected_n}, "
            f"got {tuple(head_mask.shape)} and {tuple(neuron_mask.shape)}"
        )


def compact_model(
    model: PreTrainedModel, head_mask: torch.Tensor, neuron_mask: torch.Tensor
) -> PreTrainedModel:
    """Remove heads where ``head_mask`` [L, H] is 0 and neurons where ``neuron_mask`` [L, F] is 0, in place.

    Remove structural gates first (``gates.remove()``): their hooks expect the full widths. A layer that
    loses every head (or neuron) keeps one with a zeroed output projection (see ``_compact_block``).
    Returns ``model``.
    """
    blocks = transformer_blocks(model)
    if getattr(model.config, RECORD, None):
        raise ValueError("model is already compacted; compact the original model instead")
    _validate(blocks, head_mask, neuron_mask)
    for block, heads, neurons in zip(blocks, head_mask, neuron_mask, strict=True):
        _compact_block(block, heads, neurons)
    record = {
        "kept_heads": [heads.nonzero().flatten().tolist() for heads in head_mask],
        "intermediate_sizes": [int(neurons.count_nonzero()) for neurons in neuron_mask],
    }
    setattr(model.config, RECORD, record)
    return model


def load_compacted(model_class: Any, path: str | Path, **config_overrides: Any) -> PreTrainedModel:
    """Load a model saved after ``compact_model`` (safetensors files in ``path``).

    ``model_class`` is a transformers class with ``from_config`` (e.g. AutoModelForSequenceClassification).
    The architecture is rebuilt from config.json, cut to the recorded shapes, then the weights are loaded;
    missing or unexpected weights raise (tied weights, such as GPT-2's lm_head, are filled by their twin).
    """
    config = AutoConfig.from_pretrained(path, **config_overrides)
    record = getattr(config, RECORD, None)
    if not record:
        raise ValueError(f"{path} has no {RECORD} record in its config: load it with from_pretrained")
    model = model_class.from_config(config)
    blocks = transformer_blocks(model)
    for block, heads, width in zip(blocks, record["kept_heads"], record["intermediate_sizes"], strict=True):
        head_keep = torch.zeros(block.num_heads, dtype=torch.bool)
        head_keep[heads] = True
        neuron_keep = torch.arange(block.intermediate_size) < width
        _compact_block(block, head_keep, neuron_keep)
    state: dict[str, torch.Tensor] = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        state.update(load_file(file))
    result = model.load_state_dict(state, strict=False)
    current = model.state_dict()
    loaded = {current[k].data_ptr() for k in state if k in current}
    missing = [k for k in result.missing_keys if current[k].data_ptr() not in loaded]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"weights do not match the compacted model: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    return model.eval()
