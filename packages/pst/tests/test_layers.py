"""PSTLinear against golden values from the reference SparseLinear, plus layout and block checks."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from plmkit.core.sparsity import TopKBinarizer
from plmkit.pst import PSTLinear

GOLDEN = json.loads((Path(__file__).parent / "data" / "reference_golden.json").read_text())
CASES = sorted(GOLDEN["cases"])


def _golden_layer(alpha1: float, alpha2: float, beta: float, sparsity: float) -> tuple[PSTLinear, dict]:
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in GOLDEN["inputs"].items()}
    linear = nn.Linear(6, 4).double()
    with torch.no_grad():
        linear.weight.copy_(t["W0"])
        linear.bias.copy_(t["bias"])
    layer = PSTLinear.from_linear(linear, rank_uv=2, rank_score=3, alpha1=alpha1, alpha2=alpha2, beta=beta)
    with torch.no_grad():
        for name in "UVABRC":
            getattr(layer, name).copy_(t[name])
    layer.sparsity = sparsity
    return layer, t


@pytest.mark.parametrize("case", CASES)
def test_forward_mask_and_all_six_gradients_match_the_reference(case):
    alpha1, alpha2, beta, sparsity = map(float, case.split(","))
    gold = GOLDEN["cases"][case]
    layer, t = _golden_layer(alpha1, alpha2, beta, sparsity)
    y = layer(t["x"])
    (y * t["G"]).sum().backward()
    assert torch.allclose(y, torch.tensor(gold["y"], dtype=torch.float64), rtol=0, atol=1e-6)
    assert torch.equal(layer.mask(), torch.tensor(gold["mask"], dtype=torch.float64))
    for name in "UVABRC":
        expected = torch.tensor(gold[f"grad_{name}"], dtype=torch.float64)
        assert torch.allclose(getattr(layer, name).grad, expected, rtol=0, atol=1e-6), name
    assert layer.weight.grad is None and layer.bias.grad is None


def test_float32_matches_the_reference_too():
    layer, t = _golden_layer(1.0, 1.0, 1.0, 0.5)
    layer.float()
    y = layer(t["x"].float())
    (y * t["G"].float()).sum().backward()
    gold = GOLDEN["cases"]["1.0,1.0,1.0,0.5"]
    assert torch.allclose(y.double(), torch.tensor(gold["y"], dtype=torch.float64), atol=1e-5)
    assert torch.allclose(layer.U.grad.double(), torch.tensor(gold["grad_U"], dtype=torch.float64), atol=1e-5)


def test_initialisation_makes_step_zero_magnitude_pruning():
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    layer = PSTLinear.from_linear(linear)
    assert layer.U.shape == (8, 8) and layer.V.shape == (8, 16) and layer.R.shape == (8,) and layer.C.shape == (16,)
    assert not (layer.V.any() or layer.B.any() or layer.R.any() or layer.C.any()) and layer.U.std() > 0.5
    layer.sparsity = 0.7
    magnitude = linear.weight.detach().abs()
    kept = torch.ones(128)
    kept[magnitude.flatten().argsort()[: int(0.7 * 128)]] = 0
    assert torch.equal(layer.mask(), kept.view(8, 16))
    assert not layer.weight.requires_grad and not layer.bias.requires_grad


@pytest.mark.parametrize("sparsity", [0.0, 0.33, 0.9])
def test_exact_zero_count_per_matrix(sparsity):
    layer = PSTLinear.from_linear(nn.Linear(10, 7))
    layer.sparsity = sparsity
    assert int((layer.masked_weight() == 0).sum()) == int(sparsity * 70)
    assert int(layer.pruned_count) == int(sparsity * 70)


def _autograd_blocks(layer: PSTLinear) -> torch.Tensor:
    """The same PST weight through plain autograd, each row block an independent reference-style layer."""
    b = layer.blocks
    w0 = layer.weight.t() if layer.transposed else layer.weight
    parts = []
    for w0_i, u, v, a, bb, r, c, count in zip(
        w0.chunk(b), layer.U.chunk(b), layer.V.chunk(b), layer.A.chunk(b), layer.B.chunk(b), layer.R.chunk(b),
        layer.C.chunk(b), layer.block_counts(), strict=True,
    ):
        w = w0_i + layer.beta * u @ v
        s = w.abs() + layer.alpha1 * a @ bb + layer.alpha2 * (r[:, None] + c[None])
        parts.append(w * TopKBinarizer.apply(s, count))
    return torch.cat(parts)


def test_gpt2_conv1d_layout_and_fused_qkv_blocks_equal_three_separate_layers():
    torch.manual_seed(0)
    conv = Conv1D(3 * 6, 5).double()  # GPT-2 c_attn: weight [in=5, out=18], q/k/v stacked along out
    layer = PSTLinear.from_linear(conv, rank_uv=2, rank_score=3, blocks=3, alpha1=0.5, alpha2=2.0, beta=0.7)
    with torch.no_grad():
        for name in "UVABRC":
            getattr(layer, name).normal_()
    layer.sparsity = 0.5
    assert layer.V.shape == (6, 5) and layer.C.shape == (15,) and layer.masked_weight().shape == (5, 18)
    x = torch.randn(4, 5, dtype=torch.float64)
    (layer(x) ** 2).sum().backward()
    got = {n: getattr(layer, n).grad.clone() for n in "UVABRC"}
    for n in "UVABRC":
        getattr(layer, n).grad = None
    ref = _autograd_blocks(layer)
    assert torch.allclose(layer.linear_weight(), ref)
    ((x @ ref.t() + layer.bias) ** 2).sum().backward()
    for n in "UVABRC":
        assert torch.allclose(got[n], getattr(layer, n).grad), n
    # every third of the outputs holds exactly floor(s * numel / 3) zeros
    zeros = (layer.linear_weight() == 0).reshape(3, -1).sum(dim=1)
    assert zeros.tolist() == [15, 15, 15]


def test_bad_ranks_and_blocks_raise():
    with pytest.raises(ValueError, match="ranks"):
        PSTLinear.from_linear(nn.Linear(4, 4), rank_uv=0)
    with pytest.raises(ValueError, match="blocks"):
        PSTLinear.from_linear(nn.Linear(4, 5), blocks=3)


def test_bf16_autocast_keeps_the_mask_in_float32():
    layer = PSTLinear.from_linear(nn.Linear(32, 16))
    layer.sparsity = 0.8
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(2, 32))
        assert y.dtype == torch.bfloat16
        assert int((layer.linear_weight() == 0).sum()) == int(0.8 * 512)
