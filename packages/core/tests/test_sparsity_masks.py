"""Straight-through binarizers: exact top-k counts, STE gradients, thresholds, global ranking."""

import re

import pytest
import torch

from plmkit.core.sparsity import (
    TopKBinarizer,
    global_topk_counts,
    num_pruned,
    threshold_mask,
    topk_mask,
    validate_sparsity,
)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.97])
@pytest.mark.parametrize("shape", [(7, 13), (64, 32)])
def test_topk_zeroes_exactly_the_floor_lowest(sparsity, shape):
    scores = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    mask = topk_mask(scores, sparsity)
    n = scores.numel()
    assert int((mask == 0).sum()) == int(sparsity * n)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    if sparsity > 0:
        assert scores[mask == 1].min() > scores[mask == 0].max()


def test_topk_matches_pst_argsort_reference():
    # PST's SparseBinarizer: argsort ascending, zero the first floor(s * numel) entries.
    scores = torch.randn(24, 10, generator=torch.Generator().manual_seed(1))
    for sparsity in (0.25, 0.6, 0.9):
        expected = torch.ones(scores.numel())
        expected[scores.flatten().argsort()[: int(sparsity * scores.numel())]] = 0
        assert torch.equal(topk_mask(scores, sparsity), expected.view_as(scores))


def test_topk_count_is_exact_with_ties():
    scores = torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0])
    for sparsity in (0.2, 0.3, 0.5, 0.6, 0.9):
        mask = topk_mask(scores, sparsity)
        assert int((mask == 0).sum()) == int(sparsity * 10)
    assert int(topk_mask(torch.zeros(50), 0.5).sum()) == 25


@pytest.mark.parametrize("fn", [lambda s: topk_mask(s, 0.6), lambda s: threshold_mask(s, 0.1, sigmoid=True)])
def test_ste_gradient_equals_upstream_gradient(fn):
    scores = torch.randn(8, 5, requires_grad=True)
    upstream = torch.randn(8, 5)
    (fn(scores) * upstream).sum().backward()
    assert torch.equal(scores.grad, upstream)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_invalid_sparsity_raises_naming_the_value(bad):
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        validate_sparsity(bad)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        topk_mask(torch.randn(10), bad)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        num_pruned(10, bad)


def test_threshold_mask_raw_sigmoid_and_minimum_kept():
    scores = torch.tensor([-3.0, -0.5, 0.0, 0.2, 2.0])
    assert threshold_mask(scores, 0.0).tolist() == [0, 0, 0, 1, 1]
    # sigmoid(0.2) = 0.55, sigmoid(2) = 0.88
    assert threshold_mask(scores, 0.6, sigmoid=True).tolist() == [0, 0, 0, 0, 1]
    assert threshold_mask(scores, 0.99, sigmoid=True, min_kept=2).tolist() == [0, 0, 0, 1, 1]


def test_global_counts_rank_all_matrices_together():
    gen = torch.Generator().manual_seed(2)
    small, large = torch.randn(20, 10, generator=gen) * 0.01, torch.randn(30, 10, generator=gen)
    counts = global_topk_counts([small, large], 0.5)
    assert sum(counts) == int(0.5 * 500)
    # Global ranking prunes the low-magnitude matrix first; per-matrix ranking would prune 100 and 150.
    assert counts[0] > 100 and counts[1] < 150
    # Each matrix's exact top-k with its count prunes precisely the globally lowest scores.
    masks = [TopKBinarizer.apply(s, c) for s, c in zip([small, large], counts, strict=True)]
    pruned = torch.cat([s[m == 0] for s, m in zip([small, large], masks, strict=True)])
    kept = torch.cat([s[m == 1] for s, m in zip([small, large], masks, strict=True)])
    assert pruned.max() < kept.min()


def test_global_counts_exact_with_ties_and_at_zero():
    scores = [torch.zeros(10), torch.zeros(30)]
    assert sum(global_topk_counts(scores, 0.75)) == 30
    assert global_topk_counts(scores, 0.0) == [0, 0]
    with pytest.raises(ValueError, match=r"1\.0"):
        global_topk_counts(scores, 1.0)


@pytest.mark.parametrize("count", [0, 1, 7, 50, 93, 100])
def test_sort_and_topk_paths_prune_the_same_entries(count):
    """The GPU path (full argsort) and the CPU path (top-k on the smaller side) give the same mask (distinct
    scores), and both keep exact counts with ties."""
    from plmkit.core.sparsity.masks import lowest_k_mask

    scores = torch.randn(10, 10, generator=torch.Generator().manual_seed(count))
    by_sort, by_topk = lowest_k_mask(scores, count, "sort"), lowest_k_mask(scores, count, "topk")
    assert torch.equal(by_sort, by_topk) and int((by_sort == 0).sum()) == count
    tied = torch.zeros(10, 10)
    assert int((lowest_k_mask(tied, count, "sort") == 0).sum()) == count
    with pytest.raises(ValueError, match="method must be"):
        lowest_k_mask(scores, count, "heap")
