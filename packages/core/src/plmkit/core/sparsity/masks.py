"""Straight-through binarizers: turn real-valued scores into 0/1 masks.

Each binarizer is a ``torch.autograd.Function`` whose backward passes the incoming gradient unchanged to the
scores (the straight-through estimator, STE): with W' = M * W the scores receive dL/dM = W * dL/dW', the
"movement" signal of Sanh et al. (2020) and the dL/dS := dL/dM rule of PST (Li et al. 2022).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "TopKBinarizer",
    "ThresholdBinarizer",
    "topk_mask",
    "threshold_mask",
    "global_topk_counts",
    "lowest_k_mask",
    "validate_sparsity",
    "num_pruned",
]


def validate_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as a float, or raise if it is outside [0, 1) (1.0 would remove every weight)."""
    value = float(sparsity)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return value


def num_pruned(numel: int, sparsity: float) -> int:
    """How many entries a matrix of ``numel`` entries loses: q = floor(s * n * k), as in the PST reference."""
    return int(validate_sparsity(sparsity) * numel)


def lowest_k_mask(scores: torch.Tensor, num_pruned: int, method: str = "auto") -> torch.Tensor:
    """0/1 mask (scores' dtype and shape) zeroing exactly the ``num_pruned`` lowest scores (ties broken arbitrarily).

    ``method``: ``"topk"`` runs ``torch.topk`` on whichever side is smaller (the pruned or the kept entries), with
    no full sort: the fast choice on CPU. ``"sort"`` takes the first ``num_pruned`` indices of a full ``argsort``
    (the reference's way): a GPU sorts a few million scores faster than ``topk`` selects 10% of them. ``"auto"``
    picks ``"sort"`` on CUDA tensors and ``"topk"`` elsewhere.
    """
    flat = scores.reshape(-1)
    n, k = flat.numel(), num_pruned
    if not 0 <= k <= n:
        raise ValueError(f"num_pruned must be in [0, {n}] for a tensor of {n} entries, got {k}")
    if method not in ("auto", "topk", "sort"):
        raise ValueError(f"method must be 'auto', 'topk' or 'sort', got {method!r}")
    if method == "auto":
        method = "sort" if flat.is_cuda else "topk"
    if k == 0:
        return torch.ones_like(scores)
    if method == "sort":
        mask = torch.ones_like(flat).index_fill_(0, flat.argsort()[:k], 0.0)
    elif k <= n - k:
        mask = torch.ones_like(flat).index_fill_(0, flat.topk(k, largest=False, sorted=False).indices, 0.0)
    else:
        mask = torch.zeros_like(flat).index_fill_(0, flat.topk(n - k, largest=True, sorted=False).indices, 1.0)
    return mask.view_as(scores)


class TopKBinarizer(torch.autograd.Function):
    """Mask that zeroes exactly ``num_pruned`` lowest scores of one tensor and keeps the rest (see
    :func:`lowest_k_mask`; ties are broken arbitrarily, unlike the references' argsort, so counts stay exact).
    ``num_pruned`` may equal numel, since global ranking can empty a whole matrix. Use :func:`topk_mask` to give a
    sparsity instead of a count.
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor, num_pruned: int) -> torch.Tensor:  # type: ignore[override]
        return lowest_k_mask(scores, num_pruned)

    @staticmethod
    def backward(ctx, grad_mask: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad_mask, None


class ThresholdBinarizer(torch.autograd.Function):
    """Mask keeping the entries whose score (or sigmoid(score): soft movement pruning) exceeds ``threshold``.

    ``min_kept`` > 0 additionally keeps the ``min_kept`` highest scores, so a matrix never empties (HF soft
    movement and CAP-soft keep int(0.005 * numel) + 1).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        scores: torch.Tensor,
        threshold: float,
        sigmoid: bool = False,
        min_kept: int = 0,
    ) -> torch.Tensor:
        values = torch.sigmoid(scores) if sigmoid else scores
        keep = values > threshold
        if min_kept > 0:
            flat = values.reshape(-1)
            lowest_kept = flat.topk(min(min_kept, flat.numel()), sorted=False).values.min()
            keep |= values >= lowest_kept
        return keep.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad_mask: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore
        return grad_mask, None, None, None


def topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """STE mask of ``scores`` with the lowest floor(sparsity * numel) entries zeroed."""
    return TopKBinarizer.apply(scores, num_pruned(scores.numel(), sparsity))


def threshold_mask(
    scores: torch.Tensor, threshold: float, sigmoid: bool = False, min_kept: int = 0
) -> torch.Tensor:
    """STE mask of ``scores > threshold`` (on ``sigmoid(scores)`` if ``sigmoid``); see ThresholdBinarizer."""
    return ThresholdBinarizer.apply(scores, threshold, sigmoid, min_kept)


@torch.no_grad()
def global_topk_counts(scores: Sequence[torch.Tensor], sparsity: float) -> list[int]:
    """How many entries each tensor loses when the floor(sparsity * N) lowest of all N scores go together.

    This is "global" ranking (one budget shared by every matrix, the movement-pruning global top-k option):
    feeding these counts to each matrix's exact TopKBinarizer prunes exactly the globally lowest scores, ties
    included, with no threshold to sync. One ``topk`` over the concatenated scores, no sort.
    """
    if not scores:
        raise ValueError("global_topk_counts needs at least one score tensor")
    sizes = torch.tensor([s.numel() for s in scores])
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores])
    n, k = flat.numel(), num_pruned(flat.numel(), sparsity)
    if k == 0:
        return [0] * len(scores)
    # Which tensor each selected entry came from: searchsorted on the running offsets.
    ends = sizes.cumsum(0).to(flat.device)
    if k <= n - k:
        idx = flat.topk(k, largest=False, sorted=False).indices
        return torch.bincount(torch.searchsorted(ends, idx, right=True), minlength=len(scores)).tolist()
    idx = flat.topk(n - k, largest=True, sorted=False).indices
    kept = torch.bincount(torch.searchsorted(ends, idx, right=True), minlength=len(scores)).cpu()
    return (sizes - kept).tolist()
