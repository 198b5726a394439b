"""Score-based masked linear layers (magnitude and movement pruning) and helpers to install them in a model.

``MaskedLinear`` computes y = x (M * W)^T + b with M a straight-through binary mask of a score tensor S
(Sanh et al. 2020; PST, Li et al. 2022, Sec. 3): S = |W| for magnitude pruning, a trainable tensor for movement
pruning. It wraps both ``nn.Linear`` (weight [out, in]) and transformers' GPT-2 ``Conv1D`` (weight [in, out])
and keeps the wrapped module's ``weight``/``bias`` Parameters under the same names, so optimizers, tied
weights and state-dict keys are unchanged; movement scores add one ``scores`` entry.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from plmkit.core.sparsity.masks import (
    TopKBinarizer,
    global_topk_counts,
    num_pruned,
    threshold_mask,
    validate_sparsity,
)

__all__ = [
    "MaskedLinear",
    "DEFAULT_TARGETS",
    "mask_linears",
    "masked_layers",
    "set_sparsity",
    "set_threshold",
    "effective_weight",
    "frozen_masks",
    "initial_scores",
    "is_linear",
]

Scorer = Literal["magnitude", "movement"]
Mode = Literal["topk", "threshold"]
Ranking = Literal["layer", "global"]

# Linear layers inside the transformer blocks: BERT/RoBERTa/XLM-R (`*.encoder.layer.*`, or `encoder.layer.*`
# for a bare encoder) and GPT-2 (`transformer.h.*`, or `h.*` for a bare GPT2Model). Embeddings, pooler,
# classifier and lm_head live outside these prefixes and stay dense.
DEFAULT_TARGETS: tuple[str, ...] = ("encoder.layer.*", "*.encoder.layer.*", "h.*", "transformer.h.*")


def is_linear(module: nn.Module) -> bool:
    """True for the dense layers we can mask: ``nn.Linear`` and GPT-2's transposed ``Conv1D``."""
    return isinstance(module, (nn.Linear, Conv1D))


class MaskedLinear(nn.Module):
    """A linear layer whose weight is multiplied by a binary mask recomputed from scores at every forward.

    Modes: ``"topk"`` zeroes the ``num_pruned`` = floor(sparsity * numel) lowest scores of this matrix (global
    ranking sets ``num_pruned`` per matrix instead, see :func:`set_sparsity`); ``"threshold"`` keeps scores
    (or sigmoid(scores) when ``sigmoid``) above ``threshold``.
    Build one with :meth:`from_linear`.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        transposed: bool = False,
        scorer: Scorer = "magnitude",
        mode: Mode = "topk",
        sparsity: float = 0.0,
        threshold: float = 0.0,
        sigmoid: bool = False,
        min_kept_fraction: float = 0.0,
        scores_init: float | str = 0.0,
    ) -> None:
        super().__init__()
        if scorer not in ("magnitude", "movement"):
            raise ValueError(f"scorer must be 'magnitude' or 'movement', got {scorer!r}")
        if mode not in ("topk", "threshold"):
            raise ValueError(f"mode must be 'topk' or 'threshold', got {mode!r}")
        self.weight = weight
        self.bias = bias
        self.transposed = transposed
        rows, cols = weight.shape
        self.out_features, self.in_features = (cols, rows) if transposed else (rows, cols)
        self.scorer = scorer
        self.mode = mode
        # The mask's settings are buffers, so a saved state dict restores the trained mask exactly.
        self.register_buffer("pruned_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("mask_threshold", torch.tensor(float(threshold)))
        self.sparsity = sparsity
        self.sigmoid = sigmoid
        # HF soft movement / CAP-soft keep int(0.005 * numel) + 1 entries so a matrix never empties.
        self.min_kept = int(min_kept_fraction * weight.numel()) + 1 if min_kept_fraction > 0 else 0
        if scorer == "movement":
            self.scores = nn.Parameter(initial_scores(weight, scores_init))
        self._frozen = False  # inside `frozen_masks`: no-grad forwards reuse one masked weight
        self._frozen_weight: torch.Tensor | None = None

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear | Conv1D,
        scorer: Scorer = "magnitude",
        mode: Mode = "topk",
        sparsity: float = 0.0,
        **kwargs: float | bool,
    ) -> MaskedLinear:
        """Wrap an ``nn.Linear`` or ``Conv1D``, sharing its weight and bias Parameters (no copy).

        Extra keyword arguments: ``threshold``, ``sigmoid``, ``min_kept_fraction``, ``scores_init`` (see
        :func:`initial_scores`: a constant, 0.0 as in HF movement pruning and CAP, or ``"magnitude"``).
        """
        if not is_linear(linear):
            raise TypeError(f"expected nn.Linear or transformers Conv1D, got {type(linear).__name__}")
        return cls(
            linear.weight,
            linear.bias,
            transposed=isinstance(linear, Conv1D),
            scorer=scorer,
            mode=mode,
            sparsity=sparsity,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def num_pruned(self) -> int:
        """How many entries the top-k mode zeroes (stored in the ``pruned_count`` buffer)."""
        return int(self.pruned_count)

    @num_pruned.setter
    def num_pruned(self, value: int) -> None:
        self.pruned_count.fill_(int(value))

    @property
    def threshold(self) -> float:
        """Threshold of the threshold mode (stored in the ``mask_threshold`` buffer)."""
        return float(self.mask_threshold)

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.mask_threshold.fill_(float(value))

    @property
    def sparsity(self) -> float:
        """Fraction of entries the top-k mode prunes; setting it sets ``num_pruned`` = floor(s * numel)."""
        return self.num_pruned / self.weight.numel()

    @sparsity.setter
    def sparsity(self, value: float) -> None:
        self.num_pruned = num_pruned(self.weight.numel(), value)

    def ranking_scores(self) -> torch.Tensor:
        """The tensor the mask ranks: trainable scores (movement) or |W| without gradient (magnitude)."""
        if self.scorer == "movement":
            return self.scores
        return self.weight.detach().abs()

    def mask(self) -> torch.Tensor:
        """Current 0/1 mask, same shape and layout as ``weight``; gradients reach movement scores by STE."""
        scores = self.ranking_scores()
        if self.mode == "threshold":
            return threshold_mask(scores, self.threshold, self.sigmoid, self.min_kept)
        return TopKBinarizer.apply(scores, self.num_pruned)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask()

    def linear_weight(self) -> torch.Tensor:
        """The masked weight in ``nn.Linear`` layout [out, in], as forward applies it."""
        weight = self.masked_weight()
        return weight.t() if self.transposed else weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._frozen and not torch.is_grad_enabled():
            if self._frozen_weight is None:
                self._frozen_weight = self.linear_weight()
            return F.linear(x, self._frozen_weight, self.bias)
        return F.linear(x, self.linear_weight(), self.bias)

    def extra_repr(self) -> str:
        target = (
            f"threshold={self.threshold}" if self.mode == "threshold" else f"num_pruned={self.num_pruned}"
        )
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, scorer={self.scorer}, "
            f"mode={self.mode}, {target}, transposed={self.transposed}"
        )


@contextmanager
def frozen_masks(model: nn.Module) -> Iterator[nn.Module]:
    """Within this block, every ``MaskedLinear`` of ``model`` computes its masked weight once, at its first forward
    without gradient, and reuses it for the block's other no-grad forwards (evaluation, representation passes):
    the top-k over the scores costs more than the layer's matmul at small batches. Forwards with gradient still
    compute the mask. The weights, scores and sparsity must not change inside the block; leaving it drops the
    stored weights."""
    layers = [m for m in model.modules() if isinstance(m, MaskedLinear)]
    previous = [m._frozen for m in layers]
    for m in layers:
        m._frozen = True
    try:
        yield model
    finally:
        for m, was in zip(layers, previous, strict=True):
            m._frozen = was
            if not was:
                m._frozen_weight = None


def initial_scores(weight: torch.Tensor, init: float | str = 0.0) -> torch.Tensor:
    """Initial movement scores for ``weight``: a constant (HF movement pruning: 0, so every score starts tied and the
    first masks are decided by a few noisy updates) or ``"magnitude"``, |W| (the ranking starts as magnitude
    pruning's and the accumulated movement re-ranks from there, as PST's score starts at |W0|)."""
    if init == "magnitude":
        return weight.detach().abs().clone()
    if isinstance(init, str):
        raise ValueError(f"scores_init must be a number or 'magnitude', got {init!r}")
    return torch.full_like(weight, float(init))


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight a layer actually applies, in ``nn.Linear`` layout [out, in], without gradient."""
    with torch.no_grad():
        if isinstance(module, MaskedLinear):
            return module.linear_weight()
        if isinstance(module, Conv1D):
            return module.weight.t()
        if isinstance(module, nn.Linear):
            return module.weight
    raise TypeError(f"not a linear layer: {type(module).__name__}")


def _matches(target: Sequence[str] | Callable[[str, nn.Module], bool], name: str, module: nn.Module) -> bool:
    if callable(target):
        return bool(target(name, module))
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in target)


def mask_linears(
    model: nn.Module,
    target: Sequence[str] | Callable[[str, nn.Module], bool] = DEFAULT_TARGETS,
    **kwargs: float | bool | str,
) -> list[str]:
    """Replace matching ``nn.Linear``/``Conv1D`` modules by ``MaskedLinear`` in place; return their names.

    ``target`` is a callable ``(name, module) -> bool`` or fnmatch patterns on module names (default: the
    linears inside BERT/RoBERTa/XLM-R encoder layers and GPT-2 blocks). ``kwargs`` go to
    :meth:`MaskedLinear.from_linear`.
    """
    chosen = [
        (name, module)
        for name, module in model.named_modules()
        if is_linear(module) and _matches(target, name, module)
    ]
    for name, module in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, MaskedLinear.from_linear(module, **kwargs))  # type: ignore[arg-type]
    return [name for name, _ in chosen]


def masked_layers(model: nn.Module) -> list[tuple[str, MaskedLinear]]:
    """(name, layer) for every MaskedLinear in ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MaskedLinear)]


def set_sparsity(model: nn.Module, sparsity: float, ranking: Ranking = "layer") -> None:
    """Set the sparsity of every top-k ``MaskedLinear`` in ``model``.

    ``ranking="layer"``: each matrix loses floor(s * numel) of its own entries (PST, CAP-m).
    ``ranking="global"``: the floor(s * N) lowest of all N scores are pruned wherever they are, so some
    matrices end sparser than others; the per-matrix counts come from the current scores, so call it again
    whenever the scores change (the schedule callback does, after every optimizer step).
    """
    validate_sparsity(sparsity)
    if ranking not in ("layer", "global"):
        raise ValueError(f"ranking must be 'layer' or 'global', got {ranking!r}")
    layers = [m for _, m in masked_layers(model) if m.mode == "topk"]
    if ranking == "layer":
        counts = [num_pruned(m.weight.numel(), sparsity) for m in layers]
    else:
        counts = global_topk_counts([m.ranking_scores() for m in layers], sparsity) if layers else []
    for layer, count in zip(layers, counts, strict=True):
        layer.num_pruned = count


def set_threshold(model: nn.Module, threshold: float) -> None:
    """Set the threshold of every threshold-mode ``MaskedLinear`` (soft movement pruning's tau)."""
    for _, layer in masked_layers(model):
        if layer.mode == "threshold":
            layer.threshold = float(threshold)
