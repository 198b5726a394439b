"""Dynamic Sparsification's sandwich sampling of sparsities (the sub-network loss uses the core's
``plmkit.core.losses.distillation_loss``)."""

from __future__ import annotations

import torch

__all__ = ["sample_sparsities"]


def sample_sparsities(grid: list[float], num_sampled: int, generator: torch.Generator) -> list[float]:
    """The sandwich rule: the smallest and the largest sparsity of ``grid`` every step, plus ``num_sampled - 2``
    distinct ones drawn uniformly from the rest. The smallest comes first (it is the distillation teacher)."""
    inner = grid[1:-1]
    take = min(max(num_sampled - 2, 0), len(inner))
    picked = torch.randperm(len(inner), generator=generator)[:take].sort().values.tolist()
    return [grid[0], grid[-1], *(inner[i] for i in picked)]
