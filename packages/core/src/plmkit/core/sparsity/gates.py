"""Head and FFN-neuron gates for BERT/RoBERTa/XLM-R and GPT-2, applied with forward pre-hooks.

A head gate xi[l, h] scales head h's context vector right before the attention output projection, and a neuron
gate nu[l, j] scales FFN activation j right before the FFN output projection (Michel et al. 2019; CAP-f, Xu et al.
2022, Sec. 3.3). Hooking the projections' inputs works with every attention implementation (eager, SDPA, flash),
unlike HF's ``head_mask``, which SDPA and flash attention ignore. With all gates at 1 the model is unchanged; gradients
with respect to the gates give first-order importance (``importance.py``); binary gates emulate pruning, and
``compaction.py`` turns them into a physically smaller model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers.pytorch_utils import Conv1D

__all__ = ["BlockParts", "StructuralGates", "add_structural_gates", "transformer_blocks", "out_features"]


def out_features(linear: Any) -> int:
    """Output width of an nn.Linear, Conv1D or MaskedLinear."""
    return linear.nf if isinstance(linear, Conv1D) else linear.out_features


@dataclass(frozen=True)
class BlockParts:
    """The modules of one transformer block that structural pruning touches.

    ``attention`` owns the head-count attributes (BertSelfAttention: num_attention_heads, attention_head_size,
    all_head_size; GPT2Attention: num_heads, head_dim, split_size). ``qkv`` is (query, key, value), or
    (c_attn,) when GPT-2 fuses them as one Conv1D with output [q | k | v].
    """

    # Typed Any: these are transformers modules read and updated by attribute name (duck typing).
    attention: Any
    qkv: tuple[Any, ...]
    attn_out: Any
    ffn_in: Any
    ffn_out: Any

    @property
    def fused_qkv(self) -> bool:
        return len(self.qkv) == 1

    @property
    def head_dim(self) -> int:
        return self.attention.head_dim if self.fused_qkv else self.attention.attention_head_size

    @property
    def num_heads(self) -> int:
        return self.attention.num_heads if self.fused_qkv else self.attention.num_attention_heads

    @property
    def intermediate_size(self) -> int:
        return out_features(self.ffn_in)

    def set_num_heads(self, n: int) -> None:
        """Update the head-count attributes the installed transformers code reads after heads are removed."""
        if self.fused_qkv:
            self.attention.num_heads = n
            self.attention.split_size = n * self.head_dim
        else:
            self.attention.num_attention_heads = n
            self.attention.all_head_size = n * self.head_dim


def transformer_blocks(model: nn.Module) -> list[BlockParts]:
    """Find the self-attention blocks of a BERT-family encoder or a GPT-2 decoder, in order (duck-typed)."""
    blocks = []
    module: Any
    for module in model.modules():
        attention: Any = getattr(module, "attention", None)
        if hasattr(attention, "self") and hasattr(module, "intermediate") and hasattr(module, "output"):
            own = attention.self
            blocks.append(
                BlockParts(
                    own,
                    (own.query, own.key, own.value),
                    attention.output.dense,
                    module.intermediate.dense,
                    module.output.dense,
                )
            )
        elif hasattr(getattr(module, "attn", None), "c_attn") and hasattr(module, "mlp"):
            blocks.append(
                BlockParts(
                    module.attn, (module.attn.c_attn,), module.attn.c_proj, module.mlp.c_fc, module.mlp.c_proj
                )
            )
    return blocks


class StructuralGates(nn.Module):
    """Gates ``head_gates`` [num_layers, num_heads] and ``neuron_gates`` [num_layers, intermediate_size].

    Both start at 1.

    Deliberately not registered inside the model: the gates stay out of the model's state_dict and of the
    Trainer's optimizer. They require grad so importance can be measured; while retraining with fixed masks,
    ``gates.requires_grad_(False)`` skips their gradients. Call :meth:`remove` to detach the hooks.
    """

    def __init__(self, blocks: list[BlockParts], device: torch.device | None = None) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("no BERT/RoBERTa/XLM-R or GPT-2 blocks found to gate")
        heads = {b.num_heads for b in blocks}
        neurons = {b.intermediate_size for b in blocks}
        if len(heads) != 1 or len(neurons) != 1:
            raise ValueError(
                f"gates need the same head count and FFN width in every layer, got {heads}, {neurons}"
            )
        self.head_gates = nn.Parameter(torch.ones(len(blocks), heads.pop(), device=device))
        self.neuron_gates = nn.Parameter(torch.ones(len(blocks), neurons.pop(), device=device))
        self._handles: list[RemovableHandle] = []
        for layer, block in enumerate(blocks):
            self._handles.append(block.attn_out.register_forward_pre_hook(partial(self._gate_heads, layer)))
            self._handles.append(block.ffn_out.register_forward_pre_hook(partial(self._gate_neurons, layer)))

    def _gate_heads(
        self, layer: int, module: nn.Module, args: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, ...]:
        # The context is [..., heads * head_dim] with each head's dims contiguous (both BERT and GPT-2).
        x, *rest = args
        gate = self.head_gates[layer].to(x.device, x.dtype).unsqueeze(-1)
        return ((x.unflatten(-1, (gate.shape[-2], -1)) * gate).flatten(-2), *rest)

    def _gate_neurons(
        self, layer: int, module: nn.Module, args: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, ...]:
        x, *rest = args
        return (x * self.neuron_gates[layer].to(x.device, x.dtype), *rest)

    @torch.no_grad()
    def set_masks(
        self, head_mask: torch.Tensor | None = None, neuron_mask: torch.Tensor | None = None
    ) -> None:
        """Copy (binary) masks into the gates; a mask of the wrong shape raises."""
        for gate, mask in ((self.head_gates, head_mask), (self.neuron_gates, neuron_mask)):
            if mask is None:
                continue
            if mask.shape != gate.shape:
                raise ValueError(f"mask shape {tuple(mask.shape)} does not match gates {tuple(gate.shape)}")
            gate.copy_(mask)

    def remove(self) -> None:
        """Detach every hook; the model computes as if it had no gates."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def add_structural_gates(model: nn.Module) -> StructuralGates:
    """Hook head and FFN-neuron gates into every transformer block of ``model`` (see module docstring)."""
    device = next(model.parameters()).device
    return StructuralGates(transformer_blocks(model), device=device)
