"""Size and speed of a (compacted) model, reported separately: "a fast model is not necessarily small".

Size counts what a saved model holds (parameters, bytes of its safetensors file, the embedding share);
speed is CPU latency measured on one thread, several variants interleaved, median over repeats. FLOPs per
sequence (linear layers and attention) give the speed-up that the pruning implies.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plmkit.core.sparsity import transformer_blocks

__all__ = ["flops_per_sequence", "interleaved_latency", "size_report"]


def size_report(model: nn.Module, measure_disk: bool = True) -> dict[str, Any]:
    """Parameters, embedding parameters and their share, and the bytes of ``save_pretrained``'s safetensors
    (``measure_disk=False``: parameter bytes as stored, without writing)."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = sum(p.numel() for name, p in model.named_parameters() if ".embeddings." in f".{name}")
    if measure_disk:
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            disk = sum(f.stat().st_size for f in Path(tmp).glob("*.safetensors"))
    else:
        disk = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"parameters": total, "embedding_parameters": embeddings, "embedding_share": embeddings / total,
            "bytes": disk}


def flops_per_sequence(model: nn.Module, seq_len: int) -> int:
    """Multiply-add FLOPs (x2) of one sequence through the transformer blocks: the six linears of every block
    plus attention scores and context (4 * T^2 * kept head width per layer). Embeddings and the task head are
    left out (they do not change with pruning)."""
    total = 0
    for block in transformer_blocks(model):
        linears = (*block.qkv, block.attn_out, block.ffn_in, block.ffn_out)
        total += 2 * seq_len * sum(m.weight.numel() for m in linears)
        total += 4 * seq_len * seq_len * block.num_heads * block.head_dim
    return total


def interleaved_latency(
    variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, inference: bool = True
) -> dict[str, dict[str, float]]:
    """Median wall and process-CPU seconds of each zero-argument callable, run round-robin ``repeats`` times
    (interleaving spreads a shared machine's load changes over every variant alike); under inference mode unless
    ``inference`` is False (training steps)."""
    with torch.inference_mode(inference):
        for fn in variants.values():
            for _ in range(warmup):
                fn()
        wall: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(repeats):
            for name, fn in variants.items():
                w0, c0 = time.perf_counter(), time.process_time()
                fn()
                cpu[name].append(time.process_time() - c0)
                wall[name].append(time.perf_counter() - w0)
    return {k: {"wall": statistics.median(wall[k]), "cpu": statistics.median(cpu[k])} for k in variants}
