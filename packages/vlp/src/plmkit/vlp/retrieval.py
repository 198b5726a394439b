"""Image-text retrieval over a whole split: score matrices (matching head, per mode; embeddings) and recall@K.

Candidates are the split's distinct images (by path) and all its captions. Text -> image: for each caption, the rank of
its own image among all images; image -> text: for each image, the best rank of any of its captions among all
captions. Ties count against the gold item (a constant scorer gets chance, not 100%). R@K is the share of queries with
rank < K, in [0, 1]; chance is K / (number of candidates).

Matching-head scores are the image-text matching log-odds logit[1] - logit[0] of every (caption, image) pair:
- single-stream: every pair runs through the whole trunk (the text and image embeddings are computed once);
- two-stream: the layers below the cross-attention see one modality at a time, so they run once per caption and once
  per image, and only the top `cross_attention_layers` layers run per pair (the same numbers as the full forward).
Embedding scores are cosines between the pooled [CLS] of a text-only pass and the mean image token of an image-only
pass. SemVLP's objectives do not align these two spaces (no contrastive term), so for SemVLP they measure how much
alignment the shared trunk gives for free; they are the native retrieval of a dual encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["KS", "recall_at_k", "retrieval_metrics", "score_embeddings", "score_matching"]

KS = (1, 5, 10)


def _ranks(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Rank (0-based, ties counted against) of column gold[i] in row i of scores [n, m]."""
    own = scores.gather(1, gold[:, None])
    return (scores >= own).sum(dim=1) - 1


def recall_at_k(scores: torch.Tensor, text_image: Sequence[int], ks: Sequence[int] = KS) -> dict[str, float]:
    """`t2i_r{K}` and `i2t_r{K}` from scores [n_texts, n_images] and each text's image index."""
    scores = scores.float().cpu()
    gold = torch.as_tensor(list(text_image), dtype=torch.long)
    t2i = _ranks(scores, gold)
    # image -> text: rank of each caption among all captions for its image, best caption per image
    by_image = _ranks(scores.t()[gold], torch.arange(len(gold)))
    best = torch.full((scores.shape[1],), len(gold), dtype=torch.long).scatter_reduce(0, gold, by_image, "amin")
    i2t = best[torch.unique(gold)]
    out = {}
    for k in ks:
        out[f"t2i_r{k}"] = float((t2i < k).float().mean())
        out[f"i2t_r{k}"] = float((i2t < k).float().mean())
    return out


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, max(1, size))]


@torch.no_grad()
def score_embeddings(model: Any, texts: dict[str, torch.Tensor], grids: torch.Tensor, batch_size: int = 64,
                     autocast: Callable[[], AbstractContextManager] = nullcontext) -> torch.Tensor:
    """Cosine scores [n_texts, n_images] of text-only pooled [CLS] and image-only mean tokens."""
    core = model.semvlp if hasattr(model, "semvlp") else model
    text_vecs, image_vecs = [], []
    types = texts.get("token_type_ids")
    with autocast():
        for part in _chunks(len(texts["input_ids"]), batch_size):
            out = core(input_ids=texts["input_ids"][part], attention_mask=texts["attention_mask"][part],
                       token_type_ids=types[part] if types is not None else None, mode="two")
            text_vecs.append(out.pooler_output.float())
        for part in _chunks(len(grids), batch_size):
            out = core(image_features=grids[part], mode="two")
            image_vecs.append(out.last_hidden_state.float().mean(dim=1))
    t, v = F.normalize(torch.cat(text_vecs), dim=-1), F.normalize(torch.cat(image_vecs), dim=-1)
    return t @ v.t()


@torch.no_grad()
def score_matching(model: Any, texts: dict[str, torch.Tensor], grids: torch.Tensor, mode: str,
                   pair_batch: int = 256, autocast: Callable[[], AbstractContextManager] = nullcontext) -> torch.Tensor:
    """Matching-head log-odds [n_texts, n_images] of every pair, in `mode` (see the module docstring)."""
    core = model.semvlp
    n_text, n_image = len(texts["input_ids"]), len(grids)
    start = core.encoder.first_cross if mode == "two" else 0
    scores = torch.empty(n_text, n_image)
    with autocast():
        ids, mask = texts["input_ids"], texts["attention_mask"]
        types = texts.get("token_type_ids")
        text_states = torch.cat([core.embeddings.text(ids[p], types[p] if types is not None else None)
                                 for p in _chunks(n_text, 256)])
        image_states = torch.cat([core.embeddings.image(grids[p]) for p in _chunks(n_image, 256)])
        image_mask = torch.ones(image_states.shape[:2], dtype=mask.dtype, device=mask.device)
        if start:  # two-stream: the unimodal lower layers once per caption and once per image
            text_states = torch.cat([core.run_layers(text_states[p], mask[p], None, "two", 0, start)
                                     for p in _chunks(n_text, 256)])
            image_states = torch.cat([core.run_layers(image_states[p], None, image_mask[p], "two", 0, start)
                                      for p in _chunks(n_image, 256)])
        b = min(n_image, pair_batch)
        a = max(1, pair_batch // b)
        for tp in _chunks(n_text, a):
            for ip in _chunks(n_image, b):
                ta, ib = tp.stop - tp.start, ip.stop - ip.start
                t = text_states[tp].repeat_interleave(ib, dim=0)
                tm = mask[tp].repeat_interleave(ib, dim=0)
                v = image_states[ip].repeat(ta, 1, 1)
                vm = image_mask[ip].repeat(ta, 1)
                hidden = core.run_layers(torch.cat([t, v], dim=1), tm, vm, mode, start)
                logits = model.itm_head(core.pooler(hidden)).float()
                scores[tp, ip] = (logits[:, 1] - logits[:, 0]).view(ta, ib).cpu()
    return scores


def retrieval_metrics(model: Any, texts: dict[str, torch.Tensor], grids: torch.Tensor, text_image: Sequence[int],
                      modes: Sequence[str], pair_batch: int = 256,
                      autocast: Callable[[], AbstractContextManager] = nullcontext) -> dict[str, float]:
    """`itm_{mode}_{t2i,i2t}_r{1,5,10}` for each mode, and `emb_...` from embeddings; `retrieval_images`,
    `retrieval_texts`."""
    out: dict[str, float] = {"retrieval_texts": float(len(text_image)), "retrieval_images": float(len(grids))}
    for mode in modes:
        scores = score_matching(model, texts, grids, mode, pair_batch, autocast)
        out.update({f"itm_{mode}_{k}": v for k, v in recall_at_k(scores, text_image).items()})
    emb = score_embeddings(model, texts, grids, autocast=autocast)
    out.update({f"emb_{k}": v for k, v in recall_at_k(emb, text_image).items()})
    return out
