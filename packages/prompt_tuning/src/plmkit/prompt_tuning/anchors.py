"""Prediction from training anchors: nearest neighbour (the official code) or class centroid, by cosine.

Anchors are the L2-normalised features of the training examples, each with its label and a key (a 64-bit hash of
its token ids). A query whose key equals an anchor's key is that example (or an exact duplicate of its text) and
never votes for itself: without this rule, evaluating on the training file scores ~100% (EasyNLP issue #183).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["NO_SCORE", "centroid_scores", "example_keys", "nearest_scores"]

NO_SCORE = -2.0  # below any cosine: the score of a class with no usable anchor


def example_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """A signed 64-bit hash of each row's unpadded token ids, shape (batch,)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    keys = []
    for ids, keep in zip(input_ids.cpu().numpy(), attention_mask.cpu().numpy(), strict=True):
        digest = hashlib.blake2b(ids[keep.astype(bool)].astype(np.int64).tobytes(), digest_size=8).digest()
        keys.append(int.from_bytes(digest, "little", signed=True))
    return torch.tensor(keys, dtype=torch.long, device=input_ids.device)


def _usable(query_keys: torch.Tensor, anchor_keys: torch.Tensor) -> torch.Tensor:
    """(batch, anchors) bool: False where the anchor is the query itself."""
    return query_keys[:, None] != anchor_keys[None, :]


def nearest_scores(
    features: torch.Tensor,
    query_keys: torch.Tensor,
    anchor_features: torch.Tensor,
    anchor_labels: torch.Tensor,
    anchor_keys: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    """(batch, classes): per class, the highest cosine to one of its anchors, so argmax = the 1-NN label."""
    sims = features @ anchor_features.T
    sims = sims.masked_fill(~_usable(query_keys, anchor_keys), NO_SCORE)
    scores = torch.full((len(features), num_classes), NO_SCORE, dtype=sims.dtype, device=sims.device)
    index = anchor_labels[None, :].expand_as(sims)
    return scores.scatter_reduce(1, index, sims, reduce="amax", include_self=True)


def centroid_scores(
    features: torch.Tensor,
    query_keys: torch.Tensor,
    anchor_features: torch.Tensor,
    anchor_labels: torch.Tensor,
    anchor_keys: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    """(batch, classes): cosine to each class's mean anchor, the query itself left out of the mean."""
    weights = _usable(query_keys, anchor_keys).to(features.dtype)  # (b, n)
    onehot = F.one_hot(anchor_labels, num_classes).to(features.dtype)  # (n, c)
    sums = torch.einsum("bn,nc,nd->bcd", weights, onehot, anchor_features)
    scores = torch.einsum("bd,bcd->bc", features, F.normalize(sums, dim=-1))
    return scores.masked_fill(weights @ onehot == 0, NO_SCORE)
