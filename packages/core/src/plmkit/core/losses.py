"""Loss pieces several papers share: knowledge distillation, the NT-Xent / InfoNCE contrastive loss, sentence
pooling, and BERT's 80/10/10 masked-language-model corruption. One implementation each, used by every package.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["clean_ids", "corrupt_tokens", "distillation_loss", "mask_tokens", "nt_xent", "pool"]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the batch (Hinton et al. 2015); mean squared error
    for one-output (regression) heads. The teacher gets no gradient; computed in float32."""
    teacher = teacher_logits.detach().float()
    student = student_logits.float()
    if student.shape[-1] == 1:
        return F.mse_loss(student, teacher)
    t = float(temperature)
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.softmax(teacher / t, dim=-1), reduction="batchmean") * t * t


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1, negatives: torch.Tensor | None = None) -> torch.Tensor:
    """NT-Xent (SimCLR; InfoNCE over 2N views): a[i] and b[i] are two views of example i, every other view in the
    batch (and each row of `negatives`, e.g. a MoCo queue) is a negative. Inputs are l2-normalised here; the loss is
    the mean over the 2N anchors of -log softmax of the positive's cosine / temperature."""
    if a.shape != b.shape:
        raise ValueError(f"the two views must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b]).float(), dim=-1)
    logits = z @ z.t() / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own candidate
    if negatives is not None:
        logits = torch.cat([logits, z @ F.normalize(negatives.float(), dim=-1).t() / temperature], dim=1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(a.device)
    return F.cross_entropy(logits, targets)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None, kind: str = "cls") -> torch.Tensor:
    """One vector per sequence from hidden states [B, T, H]: the first token ("cls") or the attention-masked mean
    ("mean", as sentence-transformers models such as all-MiniLM-L6-v2 were trained)."""
    if kind == "cls":
        return hidden[:, 0]
    if kind != "mean":
        raise ValueError(f"pooling must be 'cls' or 'mean', got {kind!r}")
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def clean_ids(input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The uncorrupted sequence of a masked-LM batch: the corrupted ids where nothing was chosen (labels -100), the
    original token (the label) where something was."""
    return torch.where(labels.eq(-100), input_ids, labels)


def corrupt_tokens(input_ids: torch.Tensor, chosen: torch.Tensor, mask_token_id: int, vocab_size: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption of the `chosen` positions (Devlin et al. 2019): 80% become [MASK], 10% a random token, 10%
    stay. Returns (corrupted ids, labels) with labels -100 where nothing was chosen. Random draws come from
    `generator` (on its own device, then moved to the ids') if given."""
    device = input_ids.device
    draw_on = generator.device if generator is not None else device
    roll = torch.rand(input_ids.shape, device=draw_on, generator=generator).to(device)
    random_ids = torch.randint(vocab_size, input_ids.shape, device=draw_on, generator=generator).to(device)
    chosen = chosen.to(device)
    corrupted = torch.where(chosen & (roll < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    corrupted = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, corrupted)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return corrupted, labels


def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
    whole_words: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM corruption (Devlin et al. 2019): choose `probability` of the `maskable` positions; of those,
    80% become [MASK], 10% a random token, 10% stay. Returns (corrupted ids, labels) with labels -100 where nothing
    was chosen.

    `whole_words` (word index per position, -1 for none) chooses whole words instead: every piece of a chosen word
    is masked together (whole-word masking). Random draws come from `generator` (on the ids' device) if given.
    """
    device = input_ids.device

    def rand(shape: torch.Size) -> torch.Tensor:
        return torch.rand(shape, device=device, generator=generator)

    if whole_words is None:
        chosen = maskable & (rand(input_ids.shape) < probability)
    else:
        words = whole_words.clamp_min(0)
        per_word = rand(torch.Size([input_ids.shape[0], int(words.max()) + 1])) < probability
        chosen = maskable & (whole_words >= 0) & per_word.gather(1, words)
    return corrupt_tokens(input_ids, chosen, mask_token_id, vocab_size, generator)


def mask_examples(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    probability: float,
    generators: list[torch.Generator],
) -> tuple[torch.Tensor, torch.Tensor]:
    """`mask_tokens` for each example of a batch on its own tokens (where `attention_mask` is 1), with its own
    generator (one per row, on the CPU): an example's masks depend on its generator and its tokens only, not on the
    batch it falls in or the padding that batch needs. Returns (corrupted ids, labels) shaped like `input_ids`."""
    if len(generators) != input_ids.shape[0]:
        raise ValueError(f"mask_examples needs one generator per example: {len(generators)} for {input_ids.shape[0]}")
    ids = input_ids.detach().cpu().clone()
    labels = torch.full_like(ids, -100)
    attended, allowed = attention_mask.bool().cpu(), maskable.bool().cpu()
    for row, generator in enumerate(generators):
        real = attended[row]
        masked, chosen = mask_tokens(ids[row, real][None], allowed[row, real][None], mask_token_id, vocab_size,
                                     probability, generator)
        ids[row, real], labels[row, real] = masked[0], chosen[0]
    return ids.to(input_ids.device), labels.to(input_ids.device)
