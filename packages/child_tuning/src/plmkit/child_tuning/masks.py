"""Gradient masks: the one mechanism both Child-Tuning modes share.

The paper replaces the update w <- w - lr * g by w <- w - lr * (g * M) (Section 3, Algorithm 1 with Adam: the raw
gradient is masked before the moments are updated). Here that is an in-place edit of `param.grad` after gradient
clipping and before `optimizer.step()`, so any torch optimizer can follow it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch
from torch import nn

__all__ = ["FMaskSampler", "apply_fixed_mask_", "matching_parameters"]

# F masks are drawn 16 bits at a time: one 64-bit random word gives four masks entries, which makes sampling ~5x
# cheaper than `bernoulli_` (one 32-bit draw and a float compare per entry) and keeps Child-Tuning_F within 10% of
# a vanilla step. The keep probability is therefore rounded to a multiple of 2**-16.
_LEVELS = 1 << 16


def matching_parameters(model: nn.Module, pattern: str) -> dict[str, nn.Parameter]:
    """Trainable parameters whose name matches `pattern` (`re.search`, case-sensitive; '' matches all)."""
    regex = re.compile(pattern)
    return {n: p for n, p in model.named_parameters() if p.requires_grad and regex.search(n)}


class FMaskSampler:
    """Child-Tuning_F: multiply each gradient by a fresh M ~ Bernoulli(p), i.i.d. per entry, and divide by p.

    With the rescaling E[g * M / p] = g, so the update is unbiased while its variance grows by (1 - p)/p * g^2
    (the paper's CT_F, Section 3.1). Masks come from a dedicated `torch.Generator`: they do not disturb dropout or
    data order, and every DDP process draws the same mask for the same (already all-reduced) gradient.
    """

    def __init__(self, reserve_p: float, seed: int, rescale: bool = True) -> None:
        self.levels = min(_LEVELS, max(1, round(reserve_p * _LEVELS)))
        self.keep_p = self.levels / _LEVELS  # |keep_p - reserve_p| <= 2**-17
        self.rescale = rescale
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}
        self._pending: dict[str, torch.Tensor] = {}  # loaded states of generators not created yet
        self._scratch: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            generator = torch.Generator(device=device).manual_seed(self.seed)
            state = self._pending.pop(str(device), None)
            if state is None:
                # A state saved by another process of the same kind of device (DDP: rank 0 saves cuda:0's state,
                # rank 1 resumes on cuda:1; every process draws the same stream).
                same_kind = [k for k in self._pending if torch.device(k).type == device.type]
                state = self._pending.pop(same_kind[0]) if len(same_kind) == 1 else None
            if state is not None:
                generator.set_state(state)
            self._generators[device] = generator
        return self._generators[device]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The state of every generator drawn from so far, by device ('cpu', 'cuda:0', ...)."""
        return {**self._pending, **{str(d): g.get_state() for d, g in self._generators.items()}}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Continue the streams of `state_dict()`; generators not created yet take theirs when first used."""
        for device, rng_state in state.items():
            key = str(torch.device(device))
            if torch.device(key) in self._generators:
                self._generators[torch.device(key)].set_state(rng_state)
            else:
                self._pending[key] = rng_state

    def _buffers(self, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reusable random words and float mask, as large as the largest gradient seen (one pair per device)."""
        words, mask = self._scratch.get(grad.device, (None, None))
        if words is None or mask.numel() < grad.numel() or mask.dtype != grad.dtype:
            words = torch.empty((grad.numel() + 3) // 4, dtype=torch.int64, device=grad.device)
            mask = torch.empty(grad.numel(), dtype=grad.dtype, device=grad.device)
            self._scratch[grad.device] = (words, mask)
        return words, mask

    @torch.no_grad()
    def mask_(self, grad: torch.Tensor) -> None:
        """Mask (and rescale) one gradient in place."""
        if self.levels == _LEVELS:
            return  # keep probability 1: vanilla fine-tuning, nothing to draw
        n = grad.numel()
        words, mask = self._buffers(grad)
        words = words[: (n + 3) // 4].random_(-(2**63), None, generator=self.generator(grad.device))
        # Each int16 view of the words is uniform on [-2**15, 2**15): below threshold with probability levels/2**16.
        mask = torch.lt(words.view(torch.int16)[:n], self.levels - _LEVELS // 2, out=mask[:n])
        if self.rescale:
            mask.div_(self.keep_p)
        grad.mul_(mask.view_as(grad))

    def __call__(self, params: Iterable[nn.Parameter]) -> None:
        for p in params:
            if p.grad is not None:
                self.mask_(p.grad)


@torch.no_grad()
def apply_fixed_mask_(pairs: Iterable[tuple[nn.Parameter, torch.Tensor]], scale: float | None = None) -> None:
    """Child-Tuning_D: zero the gradient outside the fixed child network (g <- g * M), optionally times `scale`."""
    for p, mask in pairs:
        if p.grad is not None:
            p.grad.mul_(mask)
            if scale is not None:
                p.grad.mul_(scale)
