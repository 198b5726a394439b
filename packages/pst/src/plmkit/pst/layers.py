"""The PST layer: a frozen linear weight W0 with a low-rank update and a low-rank + row/column importance score.

For a weight W0 in R^{n x k} (n = out, k = in), PST trains only (Li et al., IJCAI 2022; the reference
`SparseLinear` of alibaba/AliceMind `S4/PST`):

    W = W0 + beta * U V                                   U: n x r1, V: r1 x k     (weight update)
    S = |W| + alpha1 * A B + alpha2 * (R 1_k^T + 1_n C^T)  A: n x r2, B: r2 x k, R: n, C: k
    M = top-k(S): 0 on the floor(s * n * k) lowest scores, 1 elsewhere (one top-k per matrix)
    y = x (M * W)^T + b                                    (W0 and b frozen)

The mask is straight-through (dL/dS := dL/dM), and, as in the reference code, W is not detached inside |W|,
so U and V receive gradient through both the masked weight and the score:
dL/dW = M * G' + sign(W) * (W * G'), with G' = dL/d(M * W).

`PSTLinear` subclasses the core's `MaskedLinear`, so the core's `set_sparsity`, `SparsitySchedule`,
`export_dense` (which writes M * W as a plain weight), `effective_weight` and `sparsity_report` handle it
unchanged, and the pruned count lives in the same `pruned_count` buffer that a saved state dict restores.

GPT-2's fused `c_attn` (Conv1D, q/k/v stacked along the outputs) is handled with ``blocks=3``: each third of the
output rows gets its own U, V, A, B, C and its own top-k, exactly like the reference's three separate linears.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from plmkit.core.sparsity import MaskedLinear, TopKBinarizer, is_linear

__all__ = ["PSTLinear", "pst_layers"]


def _block_mm(left: torch.Tensor, right: torch.Tensor, blocks: int) -> torch.Tensor:
    """Block-diagonal product: row block i of ``left`` times row block i of ``right`` (plain @ for one block)."""
    if blocks == 1:
        return left @ right
    out = torch.bmm(left.reshape(blocks, -1, left.shape[-1]), right.reshape(blocks, -1, right.shape[-1]))
    return out.reshape(-1, right.shape[-1])


def _block_t(x: torch.Tensor, blocks: int) -> torch.Tensor:
    """Transpose each of the ``blocks`` row blocks of ``x``: [blocks * p, q] -> [blocks * q, p]."""
    if blocks == 1:
        return x.t()
    return x.reshape(blocks, -1, x.shape[-1]).transpose(1, 2).reshape(-1, x.shape[0] // blocks)


def _block_counts(total: int, blocks: int) -> list[int]:
    """Split a pruned count over equal blocks, the remainder going to the first ones (total stays exact)."""
    base, extra = divmod(total, blocks)
    return [base + (i < extra) for i in range(blocks)]


class _PSTMaskedWeight(torch.autograd.Function):
    """M * W with W = W0 + beta U V and M = top-k(S); a hand-written backward that keeps only the mask.

    Autograd through the same expression would store |W|'s input, the float mask and W for every layer (three
    n x k tensors, as much as Adam's state for full fine-tuning); here the backward recomputes W from the
    low-rank factors and the forward saves M as bool. Gradients (STE, G' = dL/d(M*W), G = G' * W):
      dA = alpha1 G B^T,  dB = alpha1 A^T G,  dR = alpha2 G 1_k,  dC = alpha2 G^T 1_n,
      dW = M * G' + sign(W) * G,  dU = beta dW V^T,  dV = beta U^T dW   (block-diagonal when blocks > 1).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        w0: torch.Tensor,
        u: torch.Tensor,
        v: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        r: torch.Tensor,
        c: torch.Tensor,
        counts: list[int],
        alphas_beta: tuple[float, float, float],
    ) -> torch.Tensor:
        alpha1, alpha2, beta = alphas_beta
        blocks = len(counts)
        weight = w0 + beta * _block_mm(u, v, blocks)
        mask = _mask(weight, a, b, r, c, counts, alpha1, alpha2)
        ctx.save_for_backward(w0, u, v, a, b, mask.bool())
        ctx.blocks, ctx.alphas_beta = blocks, alphas_beta
        return weight * mask

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        w0, u, v, a, b, keep = ctx.saved_tensors
        alpha1, alpha2, beta = ctx.alphas_beta
        blocks = ctx.blocks
        weight = w0 + beta * _block_mm(u, v, blocks)
        grad_score = grad_out * weight
        grad_weight = torch.where(keep, grad_out, 0.0) + weight.sign() * grad_score
        grad_u = beta * _block_mm(grad_weight, _block_t(v, blocks), blocks)
        grad_v = beta * _block_mm(_block_t(u, blocks), grad_weight, blocks)
        grad_a = alpha1 * _block_mm(grad_score, _block_t(b, blocks), blocks)
        grad_b = alpha1 * _block_mm(_block_t(a, blocks), grad_score, blocks)
        grad_r = alpha2 * grad_score.sum(dim=1)
        grad_c = alpha2 * grad_score.reshape(blocks, -1, grad_score.shape[1]).sum(dim=1).reshape(-1)
        grad_w0 = grad_weight if ctx.needs_input_grad[0] else None
        return grad_w0, grad_u, grad_v, grad_a, grad_b, grad_r, grad_c, None, None


def _score(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, r: torch.Tensor, c: torch.Tensor,
           blocks: int, alpha1: float, alpha2: float) -> torch.Tensor:
    """S = |W| + alpha1 A B + alpha2 (R 1^T + 1 C^T), per row block (the data-free plus data-driven score)."""
    n, k = weight.shape
    rows_cols = (r.reshape(blocks, -1, 1) + c.reshape(blocks, 1, k)).reshape(n, k)
    return weight.abs() + alpha1 * _block_mm(a, b, blocks) + alpha2 * rows_cols


def _mask(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, r: torch.Tensor, c: torch.Tensor,
          counts: list[int], alpha1: float, alpha2: float) -> torch.Tensor:
    """0/1 mask zeroing counts[i] lowest scores of row block i (the core's exact top-k, no full sort)."""
    scores = _score(weight, a, b, r, c, len(counts), alpha1, alpha2)
    if len(counts) == 1:
        return TopKBinarizer.apply(scores, counts[0])
    return torch.cat([TopKBinarizer.apply(s, q) for s, q in zip(scores.chunk(len(counts)), counts, strict=True)])


class PSTLinear(MaskedLinear):
    """A `MaskedLinear` whose mask comes from PST's score and whose weight is W0 + beta U V (W0, bias frozen).

    Trainable tensors (names as in the paper): ``U`` [n, r1], ``V`` [r1, k] (``blocks * r1`` rows when
    ``blocks > 1``), ``A`` [n, r2], ``B`` [r2, k] (``blocks * r2`` rows), ``R`` [n], ``C`` [k] (``blocks * k``).
    Initialisation as the reference: U, A ~ N(0, 1); V = B = 0; R = C = 0, so S = |W0| at step 0 and the first
    mask is magnitude pruning's. Set ``sparsity`` (or ``num_pruned``) to change the mask.
    Build one with :meth:`from_linear`.
    """

    def __init__(
        self,
        weight: nn.Parameter,
        bias: nn.Parameter | None,
        *,
        transposed: bool = False,
        rank_uv: int = 8,
        rank_score: int = 8,
        alpha1: float = 1.0,
        alpha2: float = 1.0,
        beta: float = 1.0,
        blocks: int = 1,
        sparsity: float = 0.0,
    ) -> None:
        if rank_uv < 1 or rank_score < 1:
            raise ValueError(f"ranks must be >= 1, got rank_uv={rank_uv}, rank_score={rank_score}")
        super().__init__(weight, bias, transposed=transposed, scorer="magnitude", mode="topk", sparsity=sparsity)
        n, k = self.out_features, self.in_features
        if blocks < 1 or n % blocks:
            raise ValueError(f"blocks must divide the {n} output features, got {blocks}")
        self.rank_uv, self.rank_score = rank_uv, rank_score
        self.alpha1, self.alpha2, self.beta, self.blocks = alpha1, alpha2, beta, blocks
        weight.requires_grad_(False)
        if bias is not None:
            bias.requires_grad_(False)
        like = {"dtype": weight.dtype, "device": weight.device}
        self.U = nn.Parameter(torch.randn(n, rank_uv, **like))
        self.V = nn.Parameter(torch.zeros(blocks * rank_uv, k, **like))
        self.A = nn.Parameter(torch.randn(n, rank_score, **like))
        self.B = nn.Parameter(torch.zeros(blocks * rank_score, k, **like))
        self.R = nn.Parameter(torch.zeros(n, **like))
        self.C = nn.Parameter(torch.zeros(blocks * k, **like))

    @classmethod
    def from_linear(  # type: ignore[override]
        cls,
        linear: nn.Linear | Conv1D,
        rank_uv: int = 8,
        rank_score: int = 8,
        alpha1: float = 1.0,
        alpha2: float = 1.0,
        beta: float = 1.0,
        blocks: int = 1,
        sparsity: float = 0.0,
    ) -> PSTLinear:
        """Wrap an ``nn.Linear`` or GPT-2 ``Conv1D``, sharing (and freezing) its weight and bias Parameters."""
        if not is_linear(linear):
            raise TypeError(f"expected nn.Linear or transformers Conv1D, got {type(linear).__name__}")
        return cls(
            linear.weight,
            linear.bias,
            transposed=isinstance(linear, Conv1D),
            rank_uv=rank_uv,
            rank_score=rank_score,
            alpha1=alpha1,
            alpha2=alpha2,
            beta=beta,
            blocks=blocks,
            sparsity=sparsity,
        )

    def _base_weight(self) -> torch.Tensor:
        """W0 in nn.Linear layout [out, in] (a view for Conv1D)."""
        return self.weight.t() if self.transposed else self.weight

    def block_counts(self) -> list[int]:
        return _block_counts(self.num_pruned, self.blocks)

    def updated_weight(self) -> torch.Tensor:
        """W = W0 + beta U V, [out, in], without gradient."""
        with torch.no_grad():
            return self._base_weight() + self.beta * _block_mm(self.U, self.V, self.blocks)

    def ranking_scores(self) -> torch.Tensor:
        """PST's score S, [out, in] layout transposed back to the weight's, without gradient."""
        with torch.no_grad():
            scores = _score(self.updated_weight(), self.A, self.B, self.R, self.C, self.blocks, self.alpha1, self.alpha2)
        return scores.t() if self.transposed else scores

    def mask(self) -> torch.Tensor:
        """The current 0/1 mask in the weight's layout, without gradient (reports; training uses forward)."""
        with torch.no_grad():
            mask = _mask(self.updated_weight(), self.A, self.B, self.R, self.C, self.block_counts(), self.alpha1, self.alpha2)
        return mask.t() if self.transposed else mask

    def linear_weight(self) -> torch.Tensor:
        """M * (W0 + beta U V) in nn.Linear layout [out, in], differentiable in U, V, A, B, R, C."""
        # Scores and mask in float32 even under bf16 autocast: a top-k over rounded scores would tie and flip.
        with torch.autocast(self.weight.device.type, enabled=False):
            return _PSTMaskedWeight.apply(
                self._base_weight(), self.U, self.V, self.A, self.B, self.R, self.C,
                self.block_counts(), (self.alpha1, self.alpha2, self.beta),
            )

    def masked_weight(self) -> torch.Tensor:
        """M * (W0 + beta U V) in the wrapped weight's layout ([in, out] for Conv1D), as export writes it."""
        weight = self.linear_weight()
        return weight.t().contiguous() if self.transposed else weight

    def trainable_count(self) -> int:
        """(r1 + r2 + 1)(n + k) per (block) matrix (U, V, A, B, R, C)."""
        return sum(p.numel() for p in (self.U, self.V, self.A, self.B, self.R, self.C))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank_uv={self.rank_uv}, "
            f"rank_score={self.rank_score}, alpha1={self.alpha1}, alpha2={self.alpha2}, beta={self.beta}, "
            f"blocks={self.blocks}, num_pruned={self.num_pruned}, transposed={self.transposed}"
        )


def pst_layers(model: nn.Module) -> list[tuple[str, PSTLinear]]:
    """(name, layer) for every PSTLinear in ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PSTLinear)]
