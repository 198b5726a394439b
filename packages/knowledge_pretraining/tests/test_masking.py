"""The shared masking rules (plmkit.knowledge_pretraining.masking) on handmade tensors: budgets, the exact greedy fill
with whole words, the guided share, SpanBERT spans, 80/10/10 corruption, scoring views, received attention, L_att."""

from __future__ import annotations

import math

import pytest
import torch

from plmkit.core.losses import corrupt_tokens
from plmkit.knowledge_pretraining.masking import (
    attention_loss,
    budgets,
    guided_select,
    received_attention,
    round_half_up,
    scoring_views,
    select_words,
    span_lengths,
    span_priority,
    token_words,
    word_scores,
    word_sizes,
)


def _words(sizes: list[int], pad: int = 0) -> torch.Tensor:
    """One sequence: [CLS], the words with `sizes` tokens each, [SEP], `pad` padding positions (all -1 but words)."""
    ids = [-1] + [w for w, n in enumerate(sizes) for _ in range(n)] + [-1] + [-1] * pad
    return torch.tensor([ids])


def _greedy(sizes: list[int], priority: list[float], budget: int) -> set[int]:
    """The rule, spelled out: words in priority order (ties: lower id), taken when they fit."""
    order = sorted((w for w, s in enumerate(sizes) if s > 0), key=lambda w: (-priority[w], w))
    taken, left = set(), budget
    for w in order:
        if sizes[w] <= left:
            taken.add(w)
            left -= sizes[w]
    return taken


def test_budget_is_rounded_half_up_and_at_least_one_when_anything_is_maskable():
    maskable = torch.zeros(5, 30, dtype=torch.bool)
    for row, n in enumerate([10, 3, 0, 20, 30]):
        maskable[row, :n] = True
    # 1.5 -> 2, 0.45 -> 1 (at least one), nothing maskable -> 0, 3.0 -> 3, 4.5 -> 5 (torch.round would give 4)
    assert budgets(maskable, 0.15).tolist() == [2, 1, 0, 3, 5]
    assert round_half_up(torch.tensor([0.5, 1.5, 2.5])).tolist() == [1, 2, 3]


def test_select_fills_the_budget_exactly_skipping_words_that_would_overflow():
    words = _words([2, 2, 1, 3], pad=2)
    priority = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    chosen = select_words(words, torch.tensor([3]), priority)
    # word 0 (2 tokens) fits, word 1 (2) would overflow the 1 left and is skipped, word 2 (1) fills it
    assert chosen.sum().item() == 3
    assert sorted(set(words[chosen].tolist())) == [0, 2]
    assert not chosen[words < 0].any()  # special tokens and padding are never chosen


def test_select_leaves_the_budget_short_only_when_no_remaining_word_fits():
    words = _words([2, 2])
    chosen = select_words(words, torch.tensor([3]), torch.tensor([[1.0, 0.0]]))
    assert chosen.sum().item() == 2  # one token short: the only other word has two pieces, and words are never cut
    assert set(words[chosen].tolist()) == {0}


def test_select_matches_the_greedy_rule_on_random_cases():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        batch = []
        for _ in range(4):
            sizes = torch.randint(1, 4, (int(torch.randint(1, 12, (1,), generator=gen)),), generator=gen).tolist()
            batch.append(sizes)
        longest = max(sum(s) for s in batch) + 2
        rows = [_words(s, pad=longest - sum(s) - 2)[0] for s in batch]
        words = torch.stack(rows)
        n_words = max(len(s) for s in batch)
        priority = torch.rand(4, n_words, generator=gen)
        budget = torch.randint(0, 8, (4,), generator=gen)
        chosen = select_words(words, budget, priority)
        for r, sizes in enumerate(batch):
            want = _greedy(sizes, priority[r].tolist(), int(budget[r]))
            assert set(words[r][chosen[r]].tolist()) == want
            # whole words only
            for w in want:
                assert chosen[r][words[r] == w].all()


def test_token_level_words_make_random_masking_exact():
    maskable = torch.tensor([[False, True, True, True, False, False]])
    words = token_words(maskable)
    assert words.tolist() == [[-1, 1, 2, 3, -1, -1]]
    chosen = select_words(words, torch.tensor([2]), torch.tensor([[0.0, 0.9, 0.1, 0.5, 0.0, 0.0]]))
    assert chosen.tolist() == [[False, True, False, True, False, False]]


def test_guided_share_takes_the_top_scored_words_and_the_rest_at_random():
    words = _words([1] * 12)
    scores = torch.tensor([[0.1, 9.0, 0.2, 8.0, 0.3, 7.0, 0.4, 0.5, 0.6, 0.7, 6.0, 0.8]])
    for seed in range(5):
        chosen, guided = guided_select(words, torch.tensor([6]), scores, 0.5, torch.Generator().manual_seed(seed))
        assert chosen.sum().item() == 6 and guided.sum().item() == 3  # round(0.5 x 6) tokens from the scores
        assert set(words[guided].tolist()) == {1, 3, 5}  # the three highest scores
        assert guided[chosen].sum() == 3 and not (guided & ~chosen).any()
    # eligible words only: word 1 excluded, so the next best one fills the guided share
    eligible = torch.ones(1, 12, dtype=torch.bool)
    eligible[0, 1] = False
    _, guided = guided_select(words, torch.tensor([6]), scores, 0.5, torch.Generator().manual_seed(0), eligible)
    assert set(words[guided].tolist()) == {3, 5, 10}
    # rho = 1: everything from the scores, in order; rho = 0: nothing
    chosen, guided = guided_select(words, torch.tensor([4]), scores, 1.0, torch.Generator().manual_seed(0))
    assert set(words[chosen].tolist()) == {1, 3, 5, 10} and guided.equal(chosen)
    _, guided = guided_select(words, torch.tensor([4]), scores, 0.0, torch.Generator().manual_seed(0))
    assert not guided.any()


def test_span_lengths_follow_the_clipped_geometric_distribution():
    lengths = span_lengths((40000,), torch.Generator().manual_seed(0), p=0.2, max_words=10)
    q = 0.8
    expected = sum(k * 0.2 * q ** (k - 1) for k in range(1, 10)) + 10 * q**9  # P(10) = P(l >= 10)
    assert lengths.min().item() == 1 and lengths.max().item() == 10
    assert lengths.double().mean().item() == pytest.approx(expected, abs=0.05)  # 3.69 words
    assert (lengths == 1).double().mean().item() == pytest.approx(0.2, abs=0.01)


def test_spans_are_runs_of_consecutive_words_from_random_word_starts():
    words = _words([1, 2, 1, 1, 3, 1, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1])
    n_words = int(words.max()) + 1
    starts = set()
    for seed in range(30):
        budget = torch.tensor([6])
        priority = span_priority(words, budget, torch.Generator().manual_seed(seed))[0]
        # the first span drawn holds the top band of priorities (11 wide): consecutive words in reading order,
        # one priority step apart, at most 10 words
        top = priority.max().item()
        first = [w for w in range(n_words) if priority[w].item() > top - 11]
        assert first == list(range(first[0], first[0] + len(first))) and 1 <= len(first) <= 10
        assert [top - priority[w].item() for w in first] == list(range(len(first)))
        starts.add(first[0])
        chosen = select_words(words, budget, priority[None])
        assert chosen.sum().item() == 6
        # the words of the first span are taken before any other word
        taken = set(words[chosen].tolist())
        prefix, used = [], 0
        for w in first:
            size = int((words == w).sum())
            if used + size > 6:
                break
            prefix.append(w)
            used += size
        assert set(prefix) <= taken
    assert len(starts) > 5  # anchored at random words


def test_corruption_is_80_10_10_of_the_chosen_tokens():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (64, 128), generator=gen)
    chosen = torch.rand(64, 128, generator=gen) < 0.5
    corrupted, labels = corrupt_tokens(ids, chosen, mask_token_id=3, vocab_size=1000, generator=gen)
    assert labels[chosen].equal(ids[chosen]) and (labels[~chosen] == -100).all()
    assert corrupted[~chosen].equal(ids[~chosen])
    n = chosen.sum().item()
    masked = (corrupted[chosen] == 3).sum().item() / n
    kept = (corrupted[chosen] == ids[chosen]).sum().item() / n
    assert masked == pytest.approx(0.8, abs=0.02) and kept == pytest.approx(0.1, abs=0.02)


def test_scoring_views_partition_the_words():
    words = torch.cat([_words([1, 2, 1, 3, 1, 1, 2, 1, 1, 1]), _words([2, 1, 1, 1, 1, 1, 1, 3, 1, 1], pad=1)])
    views = scoring_views(words, 4, torch.Generator().manual_seed(0))
    assert ((views >= 0) == (words >= 0)).all()  # every maskable token in exactly one view, nothing else
    for r in range(2):
        per_word = {}
        for w, v in zip(words[r].tolist(), views[r].tolist(), strict=True):
            if w >= 0:
                assert per_word.setdefault(w, v) == v  # a word's pieces share their view
        counts = [list(per_word.values()).count(v) for v in range(4)]
        assert max(counts) - min(counts) <= 1  # words dealt round-robin: balanced views


def test_word_scores_take_the_max_or_the_mean_of_the_tokens():
    words = _words([1, 3, 2])
    tokens = torch.tensor([[0.0, 5.0, 1.0, 4.0, 2.0, 3.0, 6.0, 0.0]])
    assert word_scores(tokens, words, reduce="max").tolist() == [[5.0, 4.0, 6.0]]
    assert word_scores(tokens, words, reduce="mean").tolist() == [[5.0, 7.0 / 3.0, 4.5]]
    gap = torch.tensor([[-1, 0, 2, -1]])  # word id 1 is carried by no token
    assert math.isnan(word_scores(torch.ones(1, 4), gap)[0, 1].item())
    assert word_sizes(gap).tolist() == [[1, 0, 1]]


def test_received_attention_matches_a_direct_computation():
    gen = torch.Generator().manual_seed(0)
    layers, batch, heads, length = 3, 2, 4, 6
    attn = torch.softmax(torch.randn(layers, batch, heads, length, length, generator=gen), -1)
    queries = torch.tensor([[False, True, True, False, True, False], [False, True, True, True, True, False]])
    got = received_attention(attn, queries)
    want = torch.zeros(batch, length)
    for b in range(batch):
        for t in range(length):
            total = 0.0
            for layer in range(layers):
                for h in range(heads):
                    total += sum(attn[layer, b, h, i, t].item() for i in range(length) if queries[b, i])
            want[b, t] = total / (layers * heads)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(received_attention(list(attn), queries), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(received_attention(attn[0], queries), received_attention(attn[:1], queries))


def test_attention_loss_is_minus_the_mean_log_attention_of_the_targets():
    received = torch.tensor([[0.5, 2.0, 0.25, 1.0]], requires_grad=True)
    targets = torch.tensor([[True, False, True, False]])
    loss = attention_loss(received, targets)
    assert loss.item() == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2)
    loss.backward()
    assert received.grad[0, 0].item() < 0 and received.grad[0, 1].item() == 0.0  # more attention lowers it
    empty = attention_loss(received, torch.zeros_like(targets))
    assert empty.item() == 0.0 and empty.requires_grad
