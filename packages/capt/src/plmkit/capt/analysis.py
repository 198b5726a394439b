"""Noise invariance of sequence representations: cos(h(x), h(x~)) for the three corruptions the paper names
(Luo et al. 2021, Sec. 1: masking, shuffling, substitution), the measure behind its motivation that denoising
auto-encoders learn representations covariant with the noise.

    from plmkit.capt.analysis import noise_cosines
    cos = noise_cosines(model, tokenizer, texts)   # {"masking": tensor [n], ..., "unrelated": tensor [n]}
    h = pooled_states(model, tokenizer, texts)      # [n, H]: e.g. plmkit.capt.uniformity(h)

Each corruption touches `rate` of the maskable tokens of every sentence, at least one (two for shuffling); special
tokens and padding never: masking is BERT's 80/10/10 (`plmkit.core.losses.mask_tokens`) on those positions,
shuffling moves each chosen token to another chosen position (a rotation along a random order), substitution
replaces each chosen token by a random vocabulary token. Draws come from a generator seeded with `seed`, so every
model sees the same corrupted sentences.

A high cosine alone does not show invariance: an anisotropic encoder (all representations in a narrow cone, as a
randomly initialised BERT's [CLS] state) gives every pair of sentences a cosine near 1. So the result also holds the
reference `unrelated`: cos(h(x), h(y)) with y the next text of the list (the last text paired with the first), and the
invariance to a noise is the gap between its cosine and that reference.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.core.losses import mask_tokens, pool

__all__ = ["NOISES", "REFERENCE", "choose", "corrupt", "noise_cosines", "pooled_states"]

NOISES = ("masking", "shuffling", "substitution")
REFERENCE = "unrelated"  # cos(h(x), h(y)) of two different texts


def choose(maskable: torch.Tensor, rate: float, generator: torch.Generator, at_least: int = 1) -> torch.Tensor:
    """In each row, max(at_least, round(rate * maskable tokens)) maskable positions (all of them when fewer),
    uniformly at random: short sentences get corrupted too, so no noise type is measured on untouched rows."""
    scores = torch.rand(maskable.shape, generator=generator).masked_fill(~maskable, 2.0)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    available = maskable.sum(dim=1)
    count = torch.minimum(available, torch.clamp((rate * available.float()).round().long(), min=at_least))
    return maskable & (ranks < count.unsqueeze(1))


def corrupt(input_ids: torch.Tensor, maskable: torch.Tensor, noise: str, mask_id: int, vocab_size: int,
            rate: float = 0.15, generator: torch.Generator | None = None) -> torch.Tensor:
    """`input_ids` [B, T] with `noise` applied to `rate` of the `maskable` positions of each row (see `choose`)."""
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    chosen = choose(maskable, rate, generator, at_least=2 if noise == "shuffling" else 1)
    if noise == "masking":  # BERT's 80/10/10 on exactly the chosen positions
        return mask_tokens(input_ids, chosen, mask_id, vocab_size, 1.0, generator=generator)[0]
    if noise == "substitution":
        return torch.where(chosen, torch.randint(vocab_size, input_ids.shape, generator=generator), input_ids)
    out = input_ids.clone()
    for row in range(out.shape[0]):  # shuffling: the chosen tokens rotated one step along a random order of them
        positions = chosen[row].nonzero(as_tuple=True)[0]
        if positions.numel() < 2:
            continue
        positions = positions[torch.randperm(positions.numel(), generator=generator)]
        out[row, positions] = input_ids[row, positions.roll(1)]
    return out


def _encode(encoder: nn.Module, ids: torch.Tensor, inputs: dict[str, torch.Tensor], pooling: str) -> torch.Tensor:
    hidden = encoder(input_ids=ids, **inputs)[0]
    return pool(hidden.float(), inputs.get("attention_mask"), pooling)


@torch.no_grad()
def noise_cosines(model: nn.Module, tokenizer: Any, texts: list[str], pooling: str = "cls", rate: float = 0.15,
                  max_length: int = 64, batch_size: int = 64, seed: int = 0,
                  noises: tuple[str, ...] = NOISES) -> dict[str, torch.Tensor]:
    """Per noise type, the cosine similarity [len(texts)] between the pooled last hidden states of each text and of
    its corrupted version, from `model`'s base encoder (`model.base_model`, or the model itself), in eval mode; and
    under `REFERENCE` the cosine between each text's and the next text's (with at least two texts)."""
    encoder = getattr(model, "base_model", model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    specials = set(tokenizer.all_special_ids)
    mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    out: dict[str, list[torch.Tensor]] = {n: [] for n in noises}
    cleans: list[torch.Tensor] = []
    generators = {n: torch.Generator().manual_seed(seed + i) for i, n in enumerate(noises)}
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            ids, attention = enc["input_ids"], enc["attention_mask"]
            maskable = attention.bool() & ~torch.isin(ids, torch.tensor(sorted(specials)))
            inputs = {k: v.to(device) for k, v in enc.items() if k != "input_ids"}
            clean = _encode(encoder, ids.to(device), inputs, pooling)
            cleans.append(clean.cpu())
            for noise in noises:
                noisy = corrupt(ids, maskable, noise, mask_id, len(tokenizer), rate, generators[noise])
                out[noise].append(F.cosine_similarity(clean, _encode(encoder, noisy.to(device), inputs, pooling),
                                                      dim=-1).cpu())
    finally:
        model.train(was_training)
    result = {n: torch.cat(v) for n, v in out.items()}
    if len(texts) >= 2:
        h = torch.cat(cleans)
        result[REFERENCE] = F.cosine_similarity(h, h.roll(-1, dims=0), dim=-1)
    return result


@torch.no_grad()
def pooled_states(model: nn.Module, tokenizer: Any, texts: list[str], pooling: str = "cls", max_length: int = 64,
                  batch_size: int = 64) -> torch.Tensor:
    """h [len(texts), H] (float32, on the CPU): the pooled last hidden states of `model`'s base encoder for the clean
    texts, in eval mode, tokenized as `noise_cosines` does."""
    encoder = getattr(model, "base_model", model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            inputs = {k: v.to(device) for k, v in enc.items() if k != "input_ids"}
            out.append(_encode(encoder, enc["input_ids"].to(device), inputs, pooling).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)
