"""Prediction from training anchors: nearest neighbour (the official code) or class centroid, by cosine.

Anchors are the L2-normalised features of the training examples, each with its label and its `example_id` (the
row index in the training split). A query carries the id of the anchor it is (its `example_id` when it is a
training example, -1 otherwise) and never votes for itself: without this rule, evaluating on the training split
scores ~100% (EasyNLP issue #183).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["NO_ANCHOR", "NO_SCORE", "centroid_scores", "nearest_scores"]

NO_SCORE = -2.0  # below any cosine: the score of a class with no usable anchor
NO_ANCHOR = -1  # the anchor id of a query that is not a training example


def _usable(query_ids: torch.Tensor, anchor_ids: torch.Tensor) -> torch.Tensor:
    """(batch, anchors) bool: False where the anchor is the query itself."""
    return query_ids[:, None] != anchor_ids[None, :]


def nearest_scores(
    features: torch.Tensor,
    query_ids: torch.Tensor,
    anchor_features: torch.Tensor,
    anchor_labels: torch.Tensor,
    anchor_ids: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    """(batch, classes): per class, the highest cosine to one of its anchors, so argmax = the 1-NN label."""
    sims = features @ anchor_features.T
    sims = sims.masked_fill(~_usable(query_ids, anchor_ids), NO_SCORE)
    scores = torch.full((len(features), num_classes), NO_SCORE, dtype=sims.dtype, device=sims.device)
    index = anchor_labels[None, :].expand_as(sims)
    return scores.scatter_reduce(1, index, sims, reduce="amax", include_self=True)


def centroid_scores(
    features: torch.Tensor,
    query_ids: torch.Tensor,
    anchor_features: torch.Tensor,
    anchor_labels: torch.Tensor,
    anchor_ids: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    """(batch, classes): cosine to each class's mean anchor, the query itself left out of the mean."""
    weights = _usable(query_ids, anchor_ids).to(features.dtype)  # (b, n)
    onehot = F.one_hot(anchor_labels, num_classes).to(features.dtype)  # (n, c)
    sums = torch.einsum("bn,nc,nd->bcd", weights, onehot, anchor_features)
    scores = torch.einsum("bd,bcd->bc", features, F.normalize(sums, dim=-1))
    return scores.masked_fill(weights @ onehot == 0, NO_SCORE)
