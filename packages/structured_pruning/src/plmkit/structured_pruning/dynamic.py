"""Dynamic Sparsification pieces: sandwich sampling of sparsities and the sub-network loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["distillation_loss", "sample_sparsities"]


def sample_sparsities(grid: list[float], num_sampled: int, generator: torch.Generator) -> list[float]:
    """The sandwich rule: the smallest and the largest sparsity of ``grid`` every step, plus ``num_sampled - 2``
    distinct ones drawn uniformly from the rest. The smallest comes first (it is the distillation teacher)."""
    inner = grid[1:-1]
    take = min(max(num_sampled - 2, 0), len(inner))
    picked = torch.randperm(len(inner), generator=generator)[:take].sort().values.tolist()
    return [grid[0], grid[-1], *(inner[i] for i in picked)]


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), batch mean; MSE for one-output (regression) heads."""
    teacher = teacher.detach().float()
    if student.shape[-1] == 1:
        return F.mse_loss(student.float(), teacher)
    t = temperature
    return F.kl_div(
        F.log_softmax(student.float() / t, dim=-1), F.softmax(teacher / t, dim=-1), reduction="batchmean"
    ) * (t * t)
