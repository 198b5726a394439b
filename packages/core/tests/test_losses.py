"""The shared loss pieces: KD, NT-Xent, pooling and 80/10/10 masking."""

import pytest
import torch
import torch.nn.functional as F

from plmkit.core.losses import distillation_loss, mask_examples, mask_tokens, nt_xent, pool


def test_distillation_is_zero_for_equal_logits_and_scales_with_t_squared():
    z = torch.randn(4, 3)
    assert distillation_loss(z, z, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    manual = (F.softmax(t / 2, -1) * (F.log_softmax(t / 2, -1) - F.log_softmax(s / 2, -1))).sum(-1).mean() * 4
    assert distillation_loss(s, t, 2.0).item() == pytest.approx(manual.item(), rel=1e-5)
    assert distillation_loss(s[:, :1], t[:, :1]).item() == pytest.approx(F.mse_loss(s[:, :1], t[:, :1]).item())


def test_nt_xent_matches_the_simclr_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    z = F.normalize(torch.cat([a, b]), dim=-1)
    sim = z @ z.t() / 0.5
    expected = 0.0
    for i in range(6):
        j = (i + 3) % 6
        others = [k for k in range(6) if k != i]
        expected += -(sim[i, j] - torch.logsumexp(sim[i, others], 0))
    assert nt_xent(a, b, 0.5).item() == pytest.approx(expected.item() / 6, rel=1e-5)
    assert nt_xent(a, a, 0.05).item() < nt_xent(a, b, 0.05).item()  # identical views are easy positives
    with_queue = nt_xent(a, b, 0.5, negatives=torch.randn(7, 5, generator=g))
    assert with_queue.item() > nt_xent(a, b, 0.5).item()


def test_pooling_first_token_and_masked_mean():
    h = torch.arange(2 * 3 * 2, dtype=torch.float).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(h, mask, "cls"), h[:, 0])
    assert torch.allclose(pool(h, mask, "mean")[0], h[0, :2].mean(0))
    with pytest.raises(ValueError, match="pooling must be"):
        pool(h, mask, "max")


def test_masking_is_80_10_10_over_the_chosen_positions_only():
    ids = torch.full((200, 100), 7)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = False  # e.g. [CLS]
    corrupted, labels = mask_tokens(ids, maskable, mask_token_id=3, vocab_size=50, probability=0.15,
                                    generator=torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert not chosen[:, 0].any() and (labels[chosen] == 7).all()
    assert abs(chosen.float().mean().item() - 0.15 * 99 / 100) < 0.01
    share_mask = (corrupted[chosen] == 3).float().mean().item()
    share_kept = (corrupted[chosen] == 7).float().mean().item()
    assert abs(share_mask - 0.8) < 0.03 and abs(share_kept - (0.1 + 0.1 / 50)) < 0.03
    assert torch.equal(corrupted[~chosen], ids[~chosen])


def test_whole_word_masking_takes_every_piece_of_a_word():
    ids = torch.arange(12).view(1, 12) + 10
    words = torch.tensor([[-1, 0, 0, 1, 2, 2, 2, 3, 4, 4, 5, -1]])
    for seed in range(20):
        _, labels = mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), 3, 50, 0.5,
                                torch.Generator().manual_seed(seed), whole_words=words)
        chosen = labels[0] != -100
        for w in range(6):
            pieces = chosen[words[0] == w]
            assert pieces.all() or not pieces.any()
        assert not chosen[0] and not chosen[-1]


def test_mask_examples_masks_each_row_on_its_own_tokens_whatever_the_padding():
    ids = torch.tensor([[101, 7, 8, 9, 10, 102, 0, 0], [101, 11, 12, 13, 14, 15, 16, 102]])
    attention = (ids != 0).long()
    maskable = attention.bool() & (ids != 101) & (ids != 102)

    def gens():
        return [torch.Generator().manual_seed(s) for s in (5, 6)]

    masked, labels = mask_examples(ids, attention, maskable, 103, 200, 0.5, gens())
    chosen = labels != -100
    assert chosen.any() and not (chosen & ~maskable).any()
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(masked[~chosen], ids[~chosen])
    # the first row alone (no padding) or padded further gets the same masks from the same generator
    for width in (6, 12):
        row = torch.cat([ids[:1, :6], ids.new_zeros(1, width - 6)], dim=1)
        alone, alone_labels = mask_examples(row, (row != 0).long(), (row != 0) & (row != 101) & (row != 102), 103,
                                            200, 0.5, gens()[:1])
        assert torch.equal(alone[0, :6], masked[0, :6]) and torch.equal(alone_labels[0, :6], labels[0, :6])
    with pytest.raises(ValueError, match="one generator per example"):
        mask_examples(ids, attention, maskable, 103, 200, 0.5, gens()[:1])
