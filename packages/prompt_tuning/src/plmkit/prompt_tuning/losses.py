"""CP-Tuning's pair-wise cost-sensitive contrastive loss (PCCL), in the official code's Circle-loss form.

For L2-normalised features h_i and all unordered in-batch pairs i < j, s_ij = h_i . h_j (cosine). Positive pairs
(same label) give s_p, negative pairs s_n. With margin m, scale gamma and cost ratio k, and the weights treated as
constants (no gradient through them):

    alpha_p = [1 + m - s_p]_+ / k        alpha_n = [s_n + m]_+
    Delta_p = 1 - m                      Delta_n = m
    L = softplus( LSE_n(gamma * alpha_n * (s_n - Delta_n)) + LSE_p(-gamma * alpha_p * (s_p - Delta_p)) )
      = log(1 + sum_n exp(...) * sum_p exp(...))

Hard pairs (a low s_p, a high s_n) get larger weights alpha: the "cost-sensitive" part of the paper's PCCL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pair_wise_cost_sensitive_loss"]


def pair_wise_cost_sensitive_loss(
    features: torch.Tensor, labels: torch.Tensor, margin: float = 0.4, scale: float = 64.0, cost_ratio: float = 1.0
) -> torch.Tensor:
    """PCCL over all in-batch pairs (module docstring). `features` must already be L2-normalised, shape (n, d).

    A batch without a positive or without a negative pair carries no contrastive signal: the loss is 0 (as in the
    official code, where the log-sum-exp over no pairs is -inf), returned attached to the graph.
    """
    sim = features @ features.T
    same = labels[:, None] == labels[None, :]
    upper = torch.ones_like(same).triu(diagonal=1)
    s_p = sim[same & upper]
    s_n = sim[~same & upper]
    if s_p.numel() == 0 or s_n.numel() == 0:
        return sim.sum() * 0.0
    alpha_p = torch.clamp_min(1.0 + margin - s_p.detach(), 0.0) / cost_ratio
    alpha_n = torch.clamp_min(s_n.detach() + margin, 0.0)
    logits_p = -scale * alpha_p * (s_p - (1.0 - margin))
    logits_n = scale * alpha_n * (s_n - margin)
    return F.softplus(torch.logsumexp(logits_n, dim=0) + torch.logsumexp(logits_p, dim=0))
