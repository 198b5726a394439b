"""NT-Xent against a hand computation, the positives CAPT pairs, the queue, alignment and uniformity."""

from __future__ import annotations

import math

import pytest
import torch

from plmkit.capt import FeatureQueue, alignment, uniformity
from plmkit.core.losses import nt_xent


def _hand_nt_xent(a, b, tau, negatives=()):
    """-mean over the 2N anchors of log(exp(cos(anchor, positive)/tau) / sum over every other view (and each
    negative) of exp(cos/tau)); view i's positive is view i+N and back."""
    def unit(v):
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    views = [unit(v) for v in [*a, *b]]
    negs = [unit(v) for v in negatives]
    n = len(a)
    total = 0.0
    for i, anchor in enumerate(views):
        positive = i + n if i < n else i - n
        cos = [sum(x * y for x, y in zip(anchor, other, strict=True)) for other in views]
        denom = sum(math.exp(cos[j] / tau) for j in range(2 * n) if j != i)  # the anchor itself excluded
        denom += sum(math.exp(sum(x * y for x, y in zip(anchor, q, strict=True)) / tau) for q in negs)
        total += -(cos[positive] / tau - math.log(denom))
    return total / (2 * n)


A = [[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [-0.7, 0.1, 0.9]]
B = [[0.9, 0.2, 0.4], [0.0, 1.2, -0.1], [-0.5, -0.3, 1.0]]


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_a_hand_computation(tau):
    got = nt_xent(torch.tensor(A), torch.tensor(B), tau)
    assert got.item() == pytest.approx(_hand_nt_xent(A, B, tau), rel=1e-5)


def test_nt_xent_counts_both_directions_and_excludes_the_anchor_itself():
    """Both directions count: swapping which view is 'clean' gives the same loss (2N anchors, not N); and the
    anchor is not its own candidate (including it would add exp(1/tau) to every denominator)."""
    a, b = torch.tensor(A), torch.tensor(B)
    assert nt_xent(a, b, 0.1).item() == pytest.approx(nt_xent(b, a, 0.1).item(), rel=1e-6)
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=-1)
    logits = z @ z.t() / 0.1  # the self-similarity left in
    with_self = torch.nn.functional.cross_entropy(logits, torch.tensor([3, 4, 5, 0, 1, 2]))
    assert nt_xent(a, b, 0.1).item() < with_self.item()
    one_way = -sum(  # anchors of the first view only
        math.log(torch.softmax(logits[i].masked_fill(torch.arange(6) == i, float("-inf")), 0)[i + 3].item())
        for i in range(3)) / 3
    assert nt_xent(a, b, 0.1).item() != pytest.approx(one_way, rel=1e-3)


def test_nt_xent_with_queue_negatives_matches_a_hand_computation():
    queue = [[0.3, -0.2, 0.1], [1.0, 1.0, 1.0]]
    got = nt_xent(torch.tensor(A), torch.tensor(B), 0.2, negatives=torch.tensor(queue))
    assert got.item() == pytest.approx(_hand_nt_xent(A, B, 0.2, queue), rel=1e-5)


def test_positives_are_the_two_views_of_one_example():
    """Matching pairs (row i of both views) give a low loss; the same vectors with the pairs mismatched a high one."""
    z = torch.eye(4)
    paired = nt_xent(z, z.clone(), 0.1)
    mismatched = nt_xent(z, z[[1, 0, 3, 2]], 0.1)
    assert paired.item() < 1e-3 < mismatched.item()
    # a gradient step moves view i of `b` towards a[i], its own example
    b = (z + 0.5 * torch.ones(4, 4)).requires_grad_()
    nt_xent(z, b, 0.1).backward()
    before = torch.nn.functional.cosine_similarity(b.detach(), z, dim=1)
    after = torch.nn.functional.cosine_similarity(b.detach() - 0.05 * b.grad, z, dim=1)
    assert (after > before).all()


def test_feature_queue_is_first_in_first_out_and_round_trips():
    q = FeatureQueue(5)
    assert q.negatives(torch.device("cpu")) is None
    q.push(torch.arange(3.0).unsqueeze(1).repeat(1, 2))
    q.push(torch.arange(3.0, 7.0).unsqueeze(1).repeat(1, 2))  # 7 rows into 5: rows 0 and 1 dropped
    assert len(q) == 5
    assert sorted(q.negatives(torch.device("cpu"))[:, 0].tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    again = FeatureQueue(5)
    again.load(q.state())
    assert torch.equal(again.negatives(torch.device("cpu")), q.negatives(torch.device("cpu")))
    q.push(torch.full((1, 2), 7.0))
    again.push(torch.full((1, 2), 7.0))
    assert torch.equal(again.negatives(torch.device("cpu")), q.negatives(torch.device("cpu")))
    assert 2.0 not in q.negatives(torch.device("cpu"))[:, 0].tolist()
    with pytest.raises(ValueError, match="queue_size is 4"):
        FeatureQueue(4).load(q.state())


def test_alignment_and_uniformity_of_simple_configurations():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert alignment(z, z) == pytest.approx(0.0)
    assert alignment(z, -z) == pytest.approx(4.0)  # antipodal: ||2u||^2
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)  # log exp(-2 * 4)
    assert uniformity(z) == pytest.approx(-4.0)  # orthogonal: ||u - v||^2 = 2
    assert math.isnan(uniformity(z[:1]))


def test_noise_types_corrupt_the_chosen_share_of_each_sentence():
    from plmkit.capt.analysis import NOISES, corrupt

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (6, 20), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2  # specials
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, [0, -1]] = False
    maskable[5, 4:] = False  # a short row: 3 maskable tokens
    for noise in NOISES:
        out = corrupt(ids, maskable, noise, mask_id=3, vocab_size=1000, rate=0.15, generator=g)
        changed = (out != ids).sum(1)
        assert torch.equal(out[:, [0, -1]], ids[:, [0, -1]]) and torch.equal(out[5, 4:], ids[5, 4:])
        if noise == "shuffling":  # 3 of 18 tokens moved (2 in the short row), the same multiset
            assert changed[:5].eq(3).all() and changed[5] == 2
            assert torch.equal(out.sort(1).values, ids.sort(1).values)
        else:  # 3 of 18 chosen; masking keeps 10% of them, substitution may draw the same token
            assert (changed[:5] <= 3).all() and changed.sum() >= 10
    with pytest.raises(ValueError, match="noise must be one of"):
        corrupt(ids, maskable, "deletion", 3, 1000)
