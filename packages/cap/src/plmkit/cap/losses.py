"""CAP's loss terms (Xu et al. 2022, Sec. 3; the reference's ``calculate_contrastive_loss``): the contrastive terms
against one bank, and CAP-soft's L1 (distillation is the core's ``plmkit.core.losses.distillation_loss``).

Contrastive term for a batch of B anchors z_a (l2-normalised, with gradient) and a bank with R representations
per example. Candidates K, in the reference's order:
    [stop-grad(z_1), bank(x_1)_1..R, stop-grad(z_2), bank(x_2)_1..R, ..., bank(extra_1)_1..R, ...]
logits l_{a,c} = z_a^T c / tau, the anchor's own stop-grad copy masked to -1e6, log p = log-softmax over K.
With P(a) the positives (same example id: unsupervised; same label: supervised), excluding the anchor's copy,

    L = - [ sum_a (1 / |P(a)|) sum_{c in P(a)} log p_{a,c} ] / sum_a |P(a)|

where, as in the reference, the final count is the number of positive entries whose log-probability is not
exactly 0 (an entry with probability 1 contributes nothing either way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.core.sparsity import masked_layers

__all__ = ["contrastive_terms", "sample_extra", "soft_movement_regularizer"]


def sample_extra(num_examples: int, num_representations: int, extra_examples: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Rows of floor(extra_examples / R) training examples drawn without replacement (at most all N)."""
    k = min(extra_examples // max(num_representations, 1), num_examples)
    return torch.randperm(num_examples, generator=generator)[:k]


def contrastive_terms(
    anchors: torch.Tensor,
    anchor_ids: torch.Tensor,
    anchor_labels: torch.Tensor | None,
    batch_bank: torch.Tensor,
    extra_bank: torch.Tensor,
    extra_ids: torch.Tensor,
    extra_labels: torch.Tensor | None,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(unsupervised, supervised) contrastive terms for one bank, unweighted (module docstring).

    anchors [B, H] normalised; anchor_ids / anchor_labels [B]; batch_bank [B, R, H] (the batch's own
    representations in the bank); extra_bank [E, R, H] with extra_ids / extra_labels [E]. The supervised
    term is None when no labels are given.
    """
    batch, reps, hidden = batch_bank.shape
    own = torch.cat((anchors.detach().unsqueeze(1), batch_bank.to(anchors)), dim=1)
    candidates = torch.cat((own.reshape(batch * (reps + 1), hidden), extra_bank.to(anchors).reshape(-1, hidden)))
    logits = anchors @ candidates.t() / temperature
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(batch), torch.arange(batch) * (reps + 1)] = True
    log_p = F.log_softmax(logits.masked_fill(is_self, -1e6), dim=-1)

    def term(anchor_keys: torch.Tensor, extra_keys: torch.Tensor) -> torch.Tensor:
        keys = torch.cat((anchor_keys.repeat_interleave(reps + 1), extra_keys.repeat_interleave(reps)))
        positive = anchor_keys.unsqueeze(1) == keys.to(anchor_keys.device).unsqueeze(0)
        kept = log_p.masked_fill(~positive | is_self, 0.0)
        count = positive.sum(dim=1, keepdim=True) - 1
        return -(kept / count).sum() / (kept != 0).sum()

    device = anchors.device
    unsupervised = term(anchor_ids.to(device), extra_ids.to(device))
    if anchor_labels is None or extra_labels is None:
        return unsupervised, None
    return unsupervised, term(anchor_labels.to(device), extra_labels.to(device))


def soft_movement_regularizer(model: nn.Module) -> torch.Tensor:
    """CAP-soft's L_reg: the mean over masked matrices of ||sigmoid(S)||_1 / numel(S) (soft movement pruning,
    Sanh et al. 2020, as CAP-soft uses it)."""
    terms = [torch.sigmoid(layer.scores).sum() / layer.scores.numel() for _, layer in masked_layers(model)
             if layer.scorer == "movement"]
    if not terms:
        raise ValueError("no movement-scored MaskedLinear layers to regularise")
    return torch.stack(terms).mean()
