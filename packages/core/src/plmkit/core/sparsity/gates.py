"""Head and FFN-neuron gates for BERT/RoBERTa/XLM-R, GPT-2, Llama, BART and timm ViT, applied with forward pre-hooks.

A head gate xi[l, h] scales head h's context vector right before the attention output projection, and a neuron
gate nu[l, j] scales FFN activation j right before the FFN output projection (Michel et al. 2019; CAP-f, Xu et al.
2022, Sec. 3.3). Hooking the projections' inputs works with every attention implementation (eager, SDPA, flash),
unlike HF's ``head_mask``, which SDPA and flash attention ignore. With all gates at 1 the model is unchanged; gradients
with respect to the gates give first-order importance (``importance.py``); binary gates emulate pruning, and
``compaction.py`` turns them into a physically smaller model.

Blocks found by ``transformer_blocks`` (duck-typed, so architectures with the same module layout work too):

- BERT/RoBERTa/XLM-R layers: ``attention.self.{query,key,value}``, ``attention.output.dense``,
  ``intermediate.dense`` -> ``output.dense``;
- GPT-2 blocks: fused ``attn.c_attn`` (Conv1D), ``attn.c_proj``, ``mlp.c_fc`` -> ``mlp.c_proj``;
- Llama decoder layers (and Mistral, Qwen2, ... with the same layout): ``self_attn.{q,k,v}_proj``,
  ``self_attn.o_proj``, the gated FFN ``mlp.up_proj`` (``ffn_in``) and ``mlp.gate_proj`` (``ffn_gate``) ->
  ``mlp.down_proj``. A head gate scales query head h's context; with grouped-query attention the key/value heads
  are shared and stay ungated (``num_kv_heads``);
- BART encoder and decoder layers (and mBART, Marian, OPT, ...): ``self_attn.{q,k,v}_proj``, ``self_attn.out_proj``,
  ``fc1`` -> ``fc2``. One block per layer, encoder layers first: in a decoder layer the gates act on the (causal)
  self-attention and the FFN; the cross-attention ``encoder_attn`` is not gated. The gate tensors need the same head
  count and FFN width in every block, so encoder and decoder must match in both;
- timm ViT blocks (``timm.models.vision_transformer.Block``): fused ``attn.qkv`` (nn.Linear, output [q | k | v]),
  ``attn.proj``, ``mlp.fc1`` -> ``mlp.fc2`` (GLU MLPs, whose fc1 is twice fc2's input, are not found).
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
    #: a gated FFN's second input projection (Llama's gate_proj: down(act(gate(x)) * up(x))), same width as ffn_in
    ffn_gate: Any = None

    @property
    def fused_qkv(self) -> bool:
        return len(self.qkv) == 1

    @property
    def head_dim(self) -> int:
        if self.fused_qkv:
            return self.attention.head_dim
        if hasattr(self.attention, "attention_head_size"):  # BERT
            return self.attention.attention_head_size
        return self.attention.head_dim  # Llama, BART

    @property
    def num_heads(self) -> int:
        if self.fused_qkv:
            return self.attention.num_heads
        if hasattr(self.attention, "num_attention_heads"):  # BERT
            return self.attention.num_attention_heads
        if hasattr(self.attention, "num_heads"):  # BART
            return self.attention.num_heads
        return out_features(self.qkv[0]) // self.head_dim  # Llama: the query projection's width

    @property
    def num_kv_heads(self) -> int:
        """Key/value heads: fewer than ``num_heads`` under grouped-query attention (Llama), else the same."""
        return self.num_heads if self.fused_qkv else out_features(self.qkv[2]) // self.head_dim

    @property
    def intermediate_size(self) -> int:
        return out_features(self.ffn_in)

    def set_num_heads(self, n: int) -> None:
        """Update the head-count attributes the installed transformers code reads after heads are removed."""
        if self.fused_qkv:
            self.attention.num_heads = n
            self.attention.split_size = n * self.head_dim
            if hasattr(self.attention, "attn_dim"):  # timm
                self.attention.attn_dim = n * self.head_dim
        elif hasattr(self.attention, "num_attention_heads"):  # BERT
            self.attention.num_attention_heads = n
            self.attention.all_head_size = n * self.head_dim
        elif hasattr(self.attention, "num_heads"):  # BART
            self.attention.num_heads = n
        # Llama reshapes with -1 heads: nothing to update


def _has(module: Any, *names: str) -> bool:
    return module is not None and all(hasattr(module, name) for name in names)


def _llama_block(module: Any) -> BlockParts | None:
    attn, mlp = getattr(module, "self_attn", None), getattr(module, "mlp", None)
    if not (_has(attn, "q_proj", "k_proj", "v_proj", "o_proj", "head_dim") and _has(mlp, "gate_proj", "up_proj", "down_proj")):
        return None
    return BlockParts(attn, (attn.q_proj, attn.k_proj, attn.v_proj), attn.o_proj, mlp.up_proj, mlp.down_proj,
                      ffn_gate=mlp.gate_proj)


def _bart_block(module: Any) -> BlockParts | None:
    attn = getattr(module, "self_attn", None)
    if not (_has(attn, "q_proj", "k_proj", "v_proj", "out_proj", "num_heads", "head_dim") and _has(module, "fc1", "fc2")):
        return None
    return BlockParts(attn, (attn.q_proj, attn.k_proj, attn.v_proj), attn.out_proj, module.fc1, module.fc2)


def _timm_vit_block(module: Any) -> BlockParts | None:
    attn, mlp = getattr(module, "attn", None), getattr(module, "mlp", None)
    if not (_has(attn, "qkv", "proj", "num_heads", "head_dim") and _has(mlp, "fc1", "fc2")):
        return None
    if not (isinstance(attn.qkv, nn.Linear) and isinstance(mlp.fc1, nn.Linear) and isinstance(mlp.fc2, nn.Linear)):
        return None
    if mlp.fc2.in_features != mlp.fc1.out_features:  # a GLU MLP: fc1 holds two halves
        return None
    return BlockParts(attn, (attn.qkv,), attn.proj, mlp.fc1, mlp.fc2)


def transformer_blocks(model: nn.Module) -> list[BlockParts]:
    """Find the self-attention blocks of BERT-family encoders, GPT-2, Llama, BART (encoder, then decoder) and timm ViT
    models, in order (duck-typed; see the module docstring)."""
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
        else:
            parts = _llama_block(module) or _bart_block(module) or _timm_vit_block(module)
            if parts is not None:
                blocks.append(parts)
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
            raise ValueError("no BERT/RoBERTa/XLM-R, GPT-2, Llama, BART or timm ViT blocks found to gate")
        heads = {b.num_heads for b in blocks}
        neurons = {b.intermediate_size for b in blocks}
        if len(heads) != 1 or len(neurons) != 1:
            raise ValueError(
                f"gates need the same head count and FFN width in every layer, got {heads}, {neurons}"
            )
        self.head_gates = nn.Parameter(torch.ones(len(blocks), heads.pop(), device=device))
        self.neuron_gates = nn.Parameter(torch.ones(len(blocks), neurons.pop(), device=device))
        self.active = True  # False: the hooks pass their inputs through (a sliced forward, slicing.py)
        self._handles: list[RemovableHandle] = []
        for layer, block in enumerate(blocks):
            self._handles.append(block.attn_out.register_forward_pre_hook(partial(self._gate_heads, layer)))
            self._handles.append(block.ffn_out.register_forward_pre_hook(partial(self._gate_neurons, layer)))

    def _gate_heads(
        self, layer: int, module: nn.Module, args: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, ...] | None:
        if not self.active:
            return None
        # The context is [..., heads * head_dim] with each head's dims contiguous (in every supported architecture).
        x, *rest = args
        gate = self.head_gates[layer].to(x.device, x.dtype).unsqueeze(-1)
        return ((x.unflatten(-1, (gate.shape[-2], -1)) * gate).flatten(-2), *rest)

    def _gate_neurons(
        self, layer: int, module: nn.Module, args: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, ...] | None:
        if not self.active:
            return None
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
