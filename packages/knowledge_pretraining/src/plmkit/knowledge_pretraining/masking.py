"""The masking rules every policy of `KnowledgeMaskingMethod` shares, as pure functions on tensors.

A policy only says which words come first (a *priority* per word); everything else is common:

1. **Budget.** `budgets`: round(mlm_probability x maskable tokens) of every sequence, rounded half up, at least 1
   when the sequence has a maskable token. Maskable = inside the attention mask and not a special token.
2. **Selection.** `select_words` walks the words in priority order and takes a word when all its maskable tokens
   still fit in what is left of the budget, skipping words that would overflow it, so the budget is filled
   *exactly* whenever the remaining words allow. The rare exception: when only words longer than what is left of the
   budget remain (say one token left and every remaining word has two pieces), the sequence ends up to that many
   tokens short; `select_words` leaves them unmasked rather than cut a word (the method counts them as
   `masking_shortfall_tokens`).
   Words are whole: all maskable pieces of a word are chosen together or not at all. `random` treats every token as
   its own word (token-level masking, BERT's original recipe).
3. **Guided share.** `guided_select` (the paper's "knowledgeable salient span mask", Wang et al. 2022, Sec. 4): the
   first round(rho x budget) tokens come from the words a score ranks first (greedy in score order, among eligible
   words), the rest uniformly at random from the other words.
4. **Corruption.** the core's `corrupt_tokens`: BERT's 80/10/10 of the chosen tokens ([MASK] / a random token /
   unchanged).

All random draws come from a `torch.Generator` the caller seeds (the method seeds it from the run's seed and the
global step, so runs are reproducible and a resumed run draws the same masks); draws are made on the generator's
device (CPU) and results moved to the ids' device.

Scoring helpers: `scoring_views` (the masked views of a loss-scoring pass, which partition a sequence's words),
`word_scores` (token scores to word scores), `received_attention` (attention each token receives, summed over the
valid query tokens and averaged over heads) and `attention_loss` (the paper's L_att, Sec. 4.2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "attention_loss",
    "budgets",
    "guided_select",
    "random_priority",
    "received_attention",
    "round_half_up",
    "scoring_views",
    "select_words",
    "span_lengths",
    "span_priority",
    "token_words",
    "word_scores",
    "word_sizes",
]


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """floor(x + 0.5) as int64 (torch.round rounds halves to even; budgets round them up)."""
    return torch.floor(x.double() + 0.5).long()


def budgets(maskable: torch.Tensor, probability: float) -> torch.Tensor:
    """Tokens to mask per sequence [B]: round(probability x maskable tokens), at least 1 if any token is maskable."""
    n = maskable.sum(1)
    return torch.maximum(round_half_up(n * probability), (n > 0).long())


def token_words(maskable: torch.Tensor) -> torch.Tensor:
    """Word ids for token-level masking: every maskable token its own word (its position), -1 elsewhere."""
    positions = torch.arange(maskable.shape[1], device=maskable.device).expand_as(maskable)
    return torch.where(maskable, positions, torch.full_like(positions, -1))


def word_sizes(word_ids: torch.Tensor, n_words: int | None = None) -> torch.Tensor:
    """Maskable tokens per word [B, W] (W = `n_words` or the largest word id + 1); 0 for ids no token carries."""
    if n_words is None:
        n_words = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
    sizes = torch.zeros(word_ids.shape[0], max(n_words, 1), dtype=torch.long, device=word_ids.device)
    present = word_ids >= 0
    sizes.scatter_add_(1, word_ids.clamp_min(0), present.long())
    return sizes[:, :n_words] if n_words else sizes[:, :0]


def random_priority(shape: tuple[int, int], generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform random priorities [B, W] (a uniformly random order of the words)."""
    return torch.rand(shape, generator=generator)


def select_words(word_ids: torch.Tensor, budget: torch.Tensor, priority: torch.Tensor,
                 eligible: torch.Tensor | None = None, tiebreak: torch.Tensor | None = None) -> torch.Tensor:
    """The tokens [B, T] (bool) of the words chosen greedily in priority order to fill `budget` [B] exactly.

    `word_ids` [B, T]: the word of every token, -1 for tokens that may not be masked (special, padding, or already
    chosen). `priority` [B, W] (W >= largest word id + 1): higher first; ties go to the higher `tiebreak` [B, W]
    when given, else to the lower word id. `eligible` [B, W] (optional): words that may be taken at all. A word is
    taken when its size (maskable tokens) fits in what is left of the budget; words that would overflow are skipped
    and later, shorter words tried (see the module docstring for the case where none fits).
    """
    batch, n_words = priority.shape
    device = word_ids.device
    if n_words == 0 or batch == 0:
        return torch.zeros(word_ids.shape, dtype=torch.bool, device=device)
    cpu_ids = word_ids.cpu()
    sizes = word_sizes(cpu_ids, n_words)
    ok = sizes > 0
    if eligible is not None:
        ok &= eligible.cpu().bool()
    prio = priority.cpu().double().nan_to_num(nan=-math.inf).masked_fill(~ok, -math.inf)
    if tiebreak is None:
        order = torch.argsort(prio, dim=1, descending=True, stable=True)
    else:
        first = torch.argsort(tiebreak.cpu(), dim=1, descending=True)
        order = first.gather(1, torch.argsort(prio.gather(1, first), dim=1, descending=True, stable=True))
    sorted_sizes = (sizes * ok).gather(1, order)
    remaining = budget.cpu().long().clone()
    # The longest prefix that fits is what greedy takes first; the loop below continues greedily from there.
    prefix = sorted_sizes.cumsum(1) <= remaining[:, None]
    taken = prefix & (sorted_sizes > 0)
    remaining -= (sorted_sizes * taken).sum(1)
    overflow = (~prefix).long().argmax(1).masked_fill(prefix.all(1), n_words)
    start = int(overflow.min().item()) if batch else n_words
    for k in range(start, n_words):
        if not bool((remaining > 0).any()):
            break
        size = sorted_sizes[:, k]
        fits = (size > 0) & (size <= remaining) & ~taken[:, k]
        taken[:, k] |= fits
        remaining -= size * fits
    words_taken = torch.zeros_like(taken).scatter_(1, order, taken)
    chosen = words_taken.gather(1, cpu_ids.clamp_min(0)) & (cpu_ids >= 0)
    return chosen.to(device)


def guided_select(word_ids: torch.Tensor, budget: torch.Tensor, priority: torch.Tensor, rho: float,
                  generator: torch.Generator | None = None,
                  eligible: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, guided) [B, T] bool: round(rho x budget) tokens from the words `priority` ranks first (among
    `eligible` words; equal priorities in random order), then the rest of the budget from the other words in
    uniformly random order.

    When the eligible words cannot fill the guided share (too few of them), the random part takes over what is left,
    so the total is still the budget.
    """
    guided_budget = torch.minimum(round_half_up(budget.double() * rho), budget.long())
    ties = random_priority(tuple(priority.shape), generator)
    guided = select_words(word_ids, guided_budget, priority, eligible, tiebreak=ties)
    rest_ids = torch.where(guided, torch.full_like(word_ids, -1), word_ids)
    rest_budget = budget.to(guided.device) - guided.sum(1)
    rest = select_words(rest_ids, rest_budget, random_priority(tuple(priority.shape), generator))
    return guided | rest, guided


def span_lengths(shape: tuple[int, ...], generator: torch.Generator | None = None, p: float = 0.2,
                 max_words: int = 10) -> torch.Tensor:
    """Span lengths in words, l ~ Geo(p) (P(l) = p(1-p)^(l-1), l >= 1) clipped at `max_words` (SpanBERT, Joshi et
    al. 2020, Sec. 3.1: p = 0.2, l_max = 10, mean 3.8 words)."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64).clamp_min(1e-300)
    if p >= 1.0:
        return torch.ones(shape, dtype=torch.long)
    lengths = torch.floor(torch.log(u) / math.log1p(-p)).long() + 1
    return lengths.clamp(1, max_words)


def span_priority(word_ids: torch.Tensor, budget: torch.Tensor, generator: torch.Generator | None = None,
                  p: float = 0.2, max_words: int = 10) -> torch.Tensor:
    """Word priorities [B, W] for SpanBERT-style span masking.

    Spans are drawn one after another: a length in words from `span_lengths`, anchored at the start of a uniformly
    random word, covering that many consecutive words (cut at the end of the sequence). Words of earlier spans come
    first, and inside a span in reading order; as many spans are drawn as the budget has tokens (each span holds at
    least one token), and words no span covers come last, in random order, for the rare case that overlapping spans
    leave the budget unfilled. With the shared greedy selection, the last span that fits only in part is cut at a
    word boundary and the budget filled from the next spans.
    """
    cpu_ids = word_ids.cpu()
    batch = cpu_ids.shape[0]
    n_words = int(cpu_ids.max().item()) + 1 if cpu_ids.numel() else 0
    sizes = word_sizes(cpu_ids, n_words)
    present = sizes > 0
    compact = present.long().cumsum(1) - 1  # index of each present word among the present words
    count = present.sum(1)
    spans = max(int(budget.max().item()) if batch else 0, 1)
    starts = torch.floor(torch.rand(batch, spans, generator=generator, dtype=torch.float64)
                         * count[:, None].double()).long()
    lengths = span_lengths((batch, spans), generator, p, max_words)
    offset = compact[:, None, :] - starts[:, :, None]  # [B, K, W]
    covers = present[:, None, :] & (offset >= 0) & (offset < lengths[:, :, None])
    rank = torch.arange(spans, 0, -1, dtype=torch.float64)[None, :, None]  # earlier spans higher
    band = float(max_words + 1)
    span_prio = torch.where(covers, rank * band - offset.double(), torch.full_like(offset, -math.inf,
                                                                                   dtype=torch.float64))
    best = span_prio.max(1).values
    filler = -1.0 - torch.rand(batch, n_words, generator=generator, dtype=torch.float64)
    return torch.where(torch.isfinite(best), best, filler)


def word_scores(token_scores: torch.Tensor, word_ids: torch.Tensor, n_words: int | None = None,
                reduce: str = "max") -> torch.Tensor:
    """Word scores [B, W] from token scores [B, T]: the max (or mean) over each word's tokens; NaN for word ids no
    token carries. Token scores must be finite where `word_ids >= 0`."""
    if n_words is None:
        n_words = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
    batch = word_ids.shape[0]
    idx = word_ids.clamp_min(0)
    present = word_ids >= 0
    scores = token_scores.double()
    if reduce == "max":
        out = torch.full((batch, max(n_words, 1)), -math.inf, dtype=torch.float64, device=word_ids.device)
        out.scatter_reduce_(1, idx, scores.masked_fill(~present, -math.inf), reduce="amax")
    elif reduce == "mean":
        out = torch.zeros(batch, max(n_words, 1), dtype=torch.float64, device=word_ids.device)
        out.scatter_add_(1, idx, scores.masked_fill(~present, 0.0))
        out = out / word_sizes(word_ids, max(n_words, 1)).clamp_min(1)
    else:
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    sizes = word_sizes(word_ids, max(n_words, 1))
    out = out.masked_fill(sizes == 0, math.nan)
    return out[:, :n_words]


def scoring_views(word_ids: torch.Tensor, views: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The view [B, T] in which each token is masked during a loss-scoring pass (-1: never masked).

    The words of a sequence are dealt to `views` views in a uniformly random order (word k of the shuffled order
    goes to view k mod `views`), so the views partition the maskable tokens (every token is masked, and scored, in
    exactly one view), the pieces of a word are masked together, and each view masks about 1/`views` of the words.
    """
    cpu_ids = word_ids.cpu()
    n_words = int(cpu_ids.max().item()) + 1 if cpu_ids.numel() else 0
    present = word_sizes(cpu_ids, n_words) > 0
    keys = torch.rand(cpu_ids.shape[0], n_words, generator=generator).masked_fill(~present, math.inf)
    rank = torch.argsort(torch.argsort(keys, dim=1), dim=1)
    view_of_word = rank.remainder(views)
    view = view_of_word.gather(1, cpu_ids.clamp_min(0)) if n_words else torch.zeros_like(cpu_ids)
    return torch.where(cpu_ids >= 0, view, torch.full_like(view, -1)).to(word_ids.device)


def received_attention(attentions: torch.Tensor | Sequence[torch.Tensor], queries: torch.Tensor) -> torch.Tensor:
    """Attention each token receives [B, T]: sum over the `queries` [B, T] (bool) of alpha_{i->t}, averaged over
    heads and over the layers given.

    `attentions`: one layer's softmax weights [B, H, T, T] (query i, key t), a sequence of them, or a stacked
    [L, B, H, T, T] tensor. Queries outside `queries` (special tokens, punctuation, padding) add nothing; the caller
    ignores the values of keys it does not score. Weights are the model's own (not renormalised over the scored
    keys), as in the paper's L_att.
    """
    layers = list(attentions) if not isinstance(attentions, torch.Tensor) or attentions.dim() == 5 else [attentions]
    total = None
    q = queries.to(layers[0].dtype)
    for layer in layers:
        per_layer = torch.einsum("bi,bit->bt", q, layer.mean(1))
        total = per_layer if total is None else total + per_layer
    assert total is not None
    return total / len(layers)


def attention_loss(received: torch.Tensor, targets: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L_att (Sec. 4.2): -mean over the target (pseudo knowledge-bearing) tokens of log(received attention), the
    received attention clamped at `eps`. Zero (with a graph) when there is no target token."""
    if not bool(targets.any()):
        return received.sum() * 0.0
    return -torch.log(received[targets].float().clamp_min(eps)).mean()
