"""Run a model as if it were compacted, without copying it: inside ``sliced_units(model, head_mask, neuron_mask)``
every transformer block computes with only the rows and columns of its kept heads and FFN neurons, gathered from
the full weights at each forward (``index_select``, so gradients flow back into the full weights, zero for the
removed units).

It computes what the gated model computes at those binary masks (up to float summation order) at the cost of the
smaller model: Dynamic Sparsification runs its sparser sub-networks this way. The units and the width-0 rule are
``compaction.py``'s (``index_plan``), so a sliced forward equals the compacted model's forward too. Supported where
compaction is: blocks with separate or fused (GPT-2, timm) Q/K/V as nn.Linear or GPT-2 Conv1D, without a gated FFN
(Llama's gate_proj) or grouped key/value heads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from plmkit.core.sparsity.compaction import index_plan
from plmkit.core.sparsity.gates import BlockParts, transformer_blocks

__all__ = ["can_slice", "sliced_units"]


def can_slice(blocks: list[BlockParts]) -> str | None:
    """None when ``sliced_units`` supports every block, else the reason it does not."""
    if not blocks:
        return "no transformer blocks found"
    for block in blocks:
        for module in (*block.qkv, block.attn_out, block.ffn_in, block.ffn_out):
            # exact types, not layers.is_linear's isinstance: a subclass (quantised, adapter) has its own forward,
            # which a sliced forward would replace
            if type(module) not in (nn.Linear, Conv1D):
                return f"{type(module).__name__} projections (only nn.Linear and Conv1D are sliced)"
        if block.ffn_gate is not None:
            return "a gated FFN (gate_proj)"
        if block.num_kv_heads != block.num_heads:
            return "grouped key/value heads"
    return None


def _sliced_forward(module: Any, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None, zero: bool):
    conv = isinstance(module, Conv1D)
    out_axis = 1 if conv else 0

    def forward(x: torch.Tensor) -> torch.Tensor:
        weight, bias = module.weight, module.bias
        if out_idx is not None:
            weight = weight.index_select(out_axis, out_idx)
            bias = None if bias is None else bias.index_select(0, out_idx)
        if in_idx is not None:
            weight = weight.index_select(1 - out_axis, in_idx)
        if zero:  # the block lost every unit: its output projection adds only its bias
            weight = weight * 0
        if conv:
            return torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight).view(*x.shape[:-1], weight.shape[1])
        return F.linear(x, weight, bias)

    return forward


@contextmanager
def _block_sliced(block: BlockParts, head_keep: torch.Tensor, neuron_keep: torch.Tensor) -> Iterator[None]:
    plan, num_heads, no_heads, no_neurons = index_plan(block, head_keep, neuron_keep)
    original_heads = block.num_heads
    modules = []
    try:
        for module, out_idx, in_idx in plan:
            zero = (module is block.attn_out and no_heads) or (module is block.ffn_out and no_neurons)
            module.forward = _sliced_forward(module, out_idx, in_idx, zero)
            modules.append(module)
        block.set_num_heads(num_heads)
        yield
    finally:
        for module in modules:
            del module.forward  # the class's forward again
        block.set_num_heads(original_heads)


@contextmanager
def sliced_units(model: nn.Module, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> Iterator[None]:
    """Within the context, ``model`` computes with only the heads where ``head_mask`` [L, H] is 1 and the FFN neurons
    where ``neuron_mask`` [L, F] is 1 (binary masks; see the module docstring). Structural gates on the model must be
    switched off meanwhile (``StructuralGates.active = False``): the kept units' gates are 1 by definition. Raises
    ValueError for blocks it cannot slice or masks of the wrong shape; the model is unchanged afterwards."""
    blocks = transformer_blocks(model)
    reason = can_slice(blocks)
    if reason is not None:
        raise ValueError(f"cannot slice {type(model).__name__}: {reason}")
    expected = (len(blocks), blocks[0].num_heads), (len(blocks), blocks[0].intermediate_size)
    if (tuple(head_mask.shape), tuple(neuron_mask.shape)) != expected:
        raise ValueError(f"masks must have shapes {expected[0]} and {expected[1]}, "
                         f"got {tuple(head_mask.shape)} and {tuple(neuron_mask.shape)}")
    with ExitStack() as stack:
        for block, heads, neurons in zip(blocks, head_mask, neuron_mask, strict=True):
            stack.enter_context(_block_sliced(block, heads, neurons))
        yield
