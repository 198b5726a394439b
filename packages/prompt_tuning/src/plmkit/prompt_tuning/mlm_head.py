"""A usable masked-LM head for checkpoints that ship none (`minilm`: all-MiniLM-L6-v2 has no MLM head weights).

UPT reads the answer off the masked-LM head at [MASK]. `minilm`'s head loads with the decoder tied to the word
embeddings (real) but a fresh transform (dense + LayerNorm) and a zero bias, so its vocabulary scores start as
noise. `adapt_head` trains **only the head** (transform + bias; the encoder and the tied decoder stay frozen) with
the ordinary masked-LM objective (15% of tokens, BERT's 80/10/10 rule from `plmkit.core.losses.mask_tokens`,
vocabulary scores only at masked positions) on unlabelled text, e.g. the training splits of the builtin corpora. `masked_token_accuracy` measures
the result (top-1 accuracy at masked positions of held-out text).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from plmkit.core.losses import mask_tokens
from plmkit.prompt_tuning.model import PromptModel

__all__ = ["adapt_head", "masked_token_accuracy"]


def _masked_batches(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int, max_length: int, probability: float,
    generator: torch.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input ids with masking applied, attention mask, chosen positions, original ids at them), batch by batch."""
    specials = set(tokenizer.all_special_ids)
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start : start + batch_size], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        ids = enc["input_ids"]
        maskable = enc["attention_mask"].bool() & ~torch.isin(ids, torch.tensor(sorted(specials)))
        masked, labels = mask_tokens(ids, maskable, tokenizer.mask_token_id, len(tokenizer), probability, generator)
        chosen = labels != -100
        yield masked, enc["attention_mask"], chosen, ids[chosen]


def _scores(model: PromptModel, ids: torch.Tensor, mask: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return model.vocab_scores(model.head.transform(hidden[chosen])).float()


def adapt_head(
    model: PromptModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], steps: int = 300, batch_size: int = 32,
    learning_rate: float = 1e-3, max_length: int = 64, probability: float = 0.15, seed: int = 0,
) -> list[float]:
    """Train the masked-LM head transform and bias on `texts` for `steps` (cycling, shuffled); returns the losses."""
    generator = torch.Generator().manual_seed(seed)
    head = [*model.head.dense.parameters(), *model.head.layer_norm.parameters(), model.head.bias]
    frozen = [p for p in model.parameters() if all(p is not h for h in head)]
    states = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(head, lr=learning_rate, weight_decay=0.0)
    model.train()
    model.encoder.eval()  # no dropout in the frozen encoder
    losses: list[float] = []
    while len(losses) < steps:
        order = torch.randperm(len(texts), generator=generator).tolist()
        batches = _masked_batches(tokenizer, [texts[i] for i in order], batch_size, max_length, probability, generator)
        for ids, mask, chosen, targets in batches:
            if not chosen.any():
                continue
            loss = F.cross_entropy(_scores(model, ids, mask, chosen), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    for p, state in zip(frozen, states, strict=True):
        p.requires_grad_(state)
    model.eval()
    return losses


@torch.no_grad()
def masked_token_accuracy(
    model: PromptModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int = 64, seed: int = 0
) -> float:
    """Top-1 accuracy of the head at masked positions of `texts` (15% masked, fixed seed)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    right = total = 0
    for ids, mask, chosen, targets in _masked_batches(tokenizer, texts, 64, max_length, 0.15, generator):
        if chosen.any():
            right += int((_scores(model, ids, mask, chosen).argmax(-1) == targets).sum())
            total += int(chosen.sum())
    return right / max(total, 1)
