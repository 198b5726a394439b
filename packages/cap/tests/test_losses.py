"""Parity of the contrastive terms with the reference's ``calculate_contrastive_loss`` (golden values computed
by running it on these exact inputs, with ``random.seed(0)`` giving the extra examples below)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from plmkit.cap import contrastive_terms, sample_extra, soft_movement_regularizer
from plmkit.core.losses import distillation_loss
from plmkit.core.sparsity import mask_linears
from plmkit.core.testing import tiny_model

EXTRA = [6, 9, 0, 2, 4, 3]  # random.seed(0); random.sample(range(10), k=12 // 2)
GOLDEN = {
    "unsupervised": (3.24666428565979, [
        [-0.00327376, -0.16094068, -0.27310842, -0.14453393, 0.07074792, 0.23431253, -0.06836279, 0.01418201],
        [0.0268098, 0.18986678, -0.00997311, 0.0602475, 0.09741417, -0.02462167, 0.12942064, 0.07088563],
        [-0.03231009, 0.23901011, -0.02753446, 0.05724244, -0.01295926, -0.15873316, -0.01667935, 0.15605062],
        [0.03632741, -0.16471948, 0.0213329, -0.03054051, -0.02398218, 0.19302014, 0.01645329, -0.10449911],
    ]),
    "supervised": (0.664461612701416, [
        [-0.01045118, -0.01773872, -0.03833671, -0.02754248, 0.0202947, 0.03799085, 0.00459516, -0.00595204],
        [0.01494384, 0.01479965, 0.03869038, 0.01531435, 0.0174672, -0.02131345, 0.02273319, 0.0227082],
        [-0.00690633, 0.03487132, -0.00090689, 0.01267915, -0.00253343, -0.01870123, 0.00295807, 0.02004387],
        [6.759e-05, -0.00068134, -0.00699981, -0.00586971, -0.00499785, 0.00749615, -0.00137916, -0.0172592],
    ]),
}


def _inputs():
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(10, 2, 8, generator=g), dim=-1)  # N=10 examples, R=2, H=8
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0, 0, 1])
    pooled = torch.randn(4, 8, generator=g)
    return bank, labels, pooled, torch.tensor([3, 7, 0, 5])


@pytest.mark.parametrize("term", ["unsupervised", "supervised"])
def test_contrastive_terms_match_reference(term):
    bank, labels, pooled, rows = _inputs()
    pooled.requires_grad_(True)
    extra = torch.tensor(EXTRA)
    u, s = contrastive_terms(F.normalize(pooled, dim=-1), rows, labels[rows], bank[rows], bank[extra], extra,
                             labels[extra], temperature=0.1)
    value = u if term == "unsupervised" else s
    value.backward()
    loss, grad = GOLDEN[term]
    assert value.item() == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(pooled.grad, torch.tensor(grad), atol=1e-6, rtol=1e-4)


def test_fp16_bank_changes_the_loss_only_slightly():
    bank, labels, pooled, rows = _inputs()
    extra = torch.tensor(EXTRA)
    anchors = F.normalize(pooled, dim=-1)
    full = contrastive_terms(anchors, rows, labels[rows], bank[rows], bank[extra], extra, labels[extra], 0.1)
    half = bank.half()
    compact = contrastive_terms(anchors, rows, labels[rows], half[rows], half[extra], extra, labels[extra], 0.1)
    for a, b in zip(full, compact, strict=True):
        assert b.dtype == torch.float32 and b.item() == pytest.approx(a.item(), rel=2e-3)


def test_no_labels_gives_only_the_unsupervised_term():
    bank, labels, pooled, rows = _inputs()
    extra = torch.tensor(EXTRA)
    u, s = contrastive_terms(F.normalize(pooled, dim=-1), rows, None, bank[rows], bank[extra], extra, None, 0.1)
    assert s is None and u.item() == pytest.approx(GOLDEN["unsupervised"][0], rel=1e-5)


def test_sample_extra_draws_distinct_rows_capped_by_the_dataset():
    g = torch.Generator().manual_seed(0)
    rows = sample_extra(10, 3, 4096, g)
    assert len(rows) == 10 and len(set(rows.tolist())) == 10
    assert len(sample_extra(10_000, 3, 4096, g)) == 4096 // 3


def test_distillation_is_zero_for_equal_logits_and_scaled_by_t_squared():
    logits = torch.randn(5, 3)
    assert distillation_loss(logits, logits, 2.0).abs().item() < 1e-6
    other = torch.randn(5, 3)
    kl = F.kl_div(F.log_softmax(logits / 2, -1), F.softmax(other / 2, -1), reduction="batchmean")
    assert distillation_loss(logits, other, 2.0).item() == pytest.approx(4 * kl.item(), rel=1e-6)


def test_soft_movement_regularizer_is_mean_sigmoid_of_scores():
    model, _ = tiny_model("bert")
    mask_linears(model, scorer="movement", mode="threshold", sigmoid=True)
    assert soft_movement_regularizer(model).item() == pytest.approx(0.5)  # scores start at 0
