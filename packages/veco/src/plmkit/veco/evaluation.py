"""Zero-shot cross-lingual retrieval (Tatoeba-style, as the XTREME scripts the official NLU code builds on:
mean-pooled hidden states of one layer, cosine similarity, the nearest target of each source): precision@1."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.core.errors import DataError
from plmkit.core.losses import pool

__all__ = ["default_layer", "embed", "retrieval_precision_at_1"]


def default_layer(num_layers: int) -> int:
    """Three quarters of the way up (the official Tatoeba setting reads layer 18 of 24)."""
    return max(1, round(0.75 * num_layers))


def _encoder(model: nn.Module) -> nn.Module:
    for name in ("veco", "roberta", "model"):
        inner = getattr(model, name, None)
        if isinstance(inner, nn.Module):
            return getattr(inner, "encoder", inner) if name == "model" and hasattr(inner, "encoder") else inner
    return model


@torch.no_grad()
def embed(model: nn.Module, tokenizer: Any, texts: list[str], layer: int, batch_size: int = 64,
          max_length: int = 128) -> torch.Tensor:
    """[N, d] mean-pooled hidden states of `layer` (0 = the embeddings) for `texts`, float32."""
    encoder = _encoder(model)
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    out = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(device)
            hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             output_hidden_states=True).hidden_states
            if not 0 <= layer < len(hidden):
                raise DataError(f"layer {layer} does not exist: the model has layers 0..{len(hidden) - 1}")
            out.append(pool(hidden[layer].float(), batch["attention_mask"], "mean"))
    finally:
        encoder.train(was_training)
    return torch.cat(out)


def retrieval_precision_at_1(model: nn.Module, tokenizer: Any, sources: list[str], targets: list[str],
                             layer: int | None = None, batch_size: int = 64, max_length: int = 128,
                             target_model: nn.Module | None = None) -> float:
    """The share of sources whose most similar target (cosine of mean-pooled states) is their own translation.
    `target_model` embeds the targets when they need another network (e.g. a per-language pruned sub-network)."""
    if len(sources) != len(targets) or not sources:
        raise DataError(f"retrieval needs aligned, non-empty lists; got {len(sources)} sources, {len(targets)} targets")
    config = getattr(model, "config", None)
    layer = default_layer(int(getattr(config, "num_hidden_layers", 4))) if layer is None else layer
    a = F.normalize(embed(model, tokenizer, sources, layer, batch_size, max_length), dim=-1)
    b = F.normalize(embed(target_model or model, tokenizer, targets, layer, batch_size, max_length), dim=-1)
    nearest = (a @ b.t()).argmax(dim=1)
    return float(nearest.eq(torch.arange(len(sources), device=nearest.device)).float().mean())
