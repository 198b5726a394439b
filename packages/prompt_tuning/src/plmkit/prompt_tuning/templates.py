"""Templates: where the text, the trainable prompt tokens, the [MASK] and literal words go.

A template is written as a string, e.g. `"{text} {prompt} {mask}"` (CP-Tuning's default) or
`"{text} It was {mask} ."` (LM-BFF's sentiment template). It is applied to *token ids* inside the model's forward,
so the core's tokenization (`[CLS] text [SEP]`, or `[CLS] a [SEP] b [SEP]` for pairs) stays unchanged:

1. `parse_template` checks the string and splits it into pieces (no tokenizer needed; the method configs call it).
2. `compile_template` turns the pieces into one list of ints (`TemplateIds`), stored in the model config: literal
   words become their token ids (>= 0); slots are negative codes (text, text_a, text_b, mask, prompt i).
3. `apply_template` rebuilds a padded batch: `[CLS] <template> [SEP]`, cutting text tokens (longest segment first,
   from its end) so the result fits `max_length`; the prompt tokens and the [MASK] are never cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from plmkit.core.training import MethodError

__all__ = ["TemplatedBatch", "apply_template", "compile_template", "count_prompt_tokens", "parse_template"]

TEXT, TEXT_A, TEXT_B, MASK = -1, -2, -3, -4
PROMPT_BASE = -10  # prompt token i is PROMPT_BASE - i
_SLOTS = {"text": TEXT, "text_a": TEXT_A, "text_b": TEXT_B, "mask": MASK}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def parse_template(template: str, num_prompt_tokens: int) -> list[tuple[str, str]]:
    """Split `template` into `(kind, value)` pieces: kind is a slot name (text, text_a, text_b, prompt, mask) or
    `literal` (value = the words). Raises `MethodError` for a template that cannot work."""
    pieces: list[tuple[str, str]] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(template):
        literal = template[pos : match.start()].strip()
        if literal:
            pieces.append(("literal", literal))
        name = match.group(1).strip()
        if name not in (*_SLOTS, "prompt"):
            raise MethodError(f"template {template!r}: unknown placeholder {{{name}}}; use {{text}}, {{text_a}}, {{text_b}}, {{prompt}}, {{mask}}")
        pieces.append((name, ""))
        pos = match.end()
    if template[pos:].strip():
        pieces.append(("literal", template[pos:].strip()))
    kinds = [k for k, _ in pieces]
    if kinds.count("mask") != 1:
        raise MethodError(f"template {template!r} must contain exactly one {{mask}}, found {kinds.count('mask')}")
    if "text" in kinds and ("text_a" in kinds or "text_b" in kinds):
        raise MethodError(f"template {template!r}: use either {{text}} or {{text_a}}/{{text_b}}, not both")
    if not {"text", "text_a"} & set(kinds):
        raise MethodError(f"template {template!r} has no {{text}} (or {{text_a}}): where does the input go?")
    if any(kinds.count(k) > 1 for k in _SLOTS):
        raise MethodError(f"template {template!r}: each text slot may appear only once")
    if "prompt" in kinds and num_prompt_tokens == 0:
        raise MethodError(f"template {template!r} has {{prompt}} but num_prompt_tokens is 0")
    if "prompt" not in kinds and num_prompt_tokens > 0:
        raise MethodError(
            f"num_prompt_tokens is {num_prompt_tokens} but template {template!r} has no {{prompt}} to put them at"
        )
    return pieces


def compile_template(template: str, num_prompt_tokens: int, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The template as ints: literal token ids (>= 0) and slot codes (< 0). Each `{prompt}` gets the next
    `num_prompt_tokens` prompt indices, so two `{prompt}`s use different trainable tokens."""
    out: list[int] = []
    next_prompt = 0
    for i, (kind, value) in enumerate(parse_template(template, num_prompt_tokens)):
        if kind == "literal":
            # A leading space, except at the very start, so byte-level BPE (RoBERTa) sees a word start.
            out += tokenizer(value if i == 0 else " " + value, add_special_tokens=False)["input_ids"]
        elif kind == "prompt":
            out += [PROMPT_BASE - (next_prompt + j) for j in range(num_prompt_tokens)]
            next_prompt += num_prompt_tokens
        else:
            out.append(_SLOTS[kind])
    return out


def count_prompt_tokens(template_ids: list[int]) -> int:
    """How many trainable prompt tokens a compiled template uses."""
    return sum(1 for t in template_ids if t <= PROMPT_BASE)


@dataclass
class TemplatedBatch:
    """A batch after `apply_template` (all tensors (batch, length) unless noted)."""

    input_ids: torch.Tensor  # prompt positions hold the pad id; their embeddings come from the prompt table
    attention_mask: torch.Tensor
    prompt_index: torch.Tensor  # which prompt token sits at a position, -1 elsewhere
    text_mask: torch.Tensor  # bool: positions holding input-text tokens (candidates for auxiliary MLM masking)
    mask_positions: torch.Tensor  # (batch,): where the [MASK] is


def _segments(body: list[int], sep_id: int) -> list[list[int]]:
    """Text segments of `[CLS] a [SEP] b [SEP]` without the outer specials (RoBERTa's `</s></s>` gives an empty
    middle segment, dropped)."""
    out: list[list[int]] = [[]]
    for tok in body:
        if tok == sep_id:
            out.append([])
        else:
            out[-1].append(tok)
    return [s for s in out if s] or [[]]


def _fit(texts: dict[int, list[int]], budget: int) -> dict[int, list[int]]:
    """Cut the longest text slot from its end until all fit in `budget` tokens (transformers' longest_first)."""
    texts = {k: list(v) for k, v in texts.items()}
    while sum(len(v) for v in texts.values()) > budget:
        longest = max(texts, key=lambda k: len(texts[k]))
        texts[longest].pop()
    return texts


def apply_template(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    template_ids: list[int],
    *,
    cls_id: int,
    sep_id: int,
    mask_id: int,
    pad_id: int,
    max_length: int,
) -> TemplatedBatch:
    """Rebuild `[CLS] text [SEP]` rows as `[CLS] <template> [SEP]`, right-padded (see the module docstring)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    fixed = sum(1 for t in template_ids if t >= 0 or t == MASK or t <= PROMPT_BASE) + 2
    budget = max_length - fixed
    if budget < 1:
        raise MethodError(f"max_length {max_length} leaves no room for text: the template alone takes {fixed} tokens")
    rows: list[tuple[list[int], list[int], list[bool], int]] = []
    for ids, keep in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
        ids = [t for t, k in zip(ids, keep, strict=True) if k]
        if len(ids) < 2 or ids[0] != cls_id or ids[-1] != sep_id:
            raise MethodError(
                "prompt templates expect inputs tokenized with special tokens ([CLS] ... [SEP]); got ids starting "
                f"{ids[:3]} and ending {ids[-2:]}"
            )
        segments = _segments(ids[1:-1], sep_id)
        if TEXT in template_ids:
            texts = {TEXT: ids[1:-1]}
        else:
            if TEXT_B in template_ids and len(segments) < 2:
                raise MethodError("template has {text_b} but the input has a single text segment")
            texts = {TEXT_A: segments[0], **({TEXT_B: segments[1]} if TEXT_B in template_ids else {})}
        texts = _fit(texts, budget)
        out, prompt, is_text = [cls_id], [-1], [False]
        mask_pos = -1
        for t in template_ids:
            if t in texts:
                out += texts[t]
                prompt += [-1] * len(texts[t])
                is_text += [True] * len(texts[t])
                continue
            if t == MASK:
                mask_pos = len(out)
            out.append(mask_id if t == MASK else pad_id if t <= PROMPT_BASE else t)
            prompt.append(PROMPT_BASE - t if t <= PROMPT_BASE else -1)
            is_text.append(False)
        out.append(sep_id)
        prompt.append(-1)
        is_text.append(False)
        rows.append((out, prompt, is_text, mask_pos))
    length = max(len(r[0]) for r in rows)
    n = len(rows)
    batch = TemplatedBatch(
        input_ids=torch.full((n, length), pad_id, dtype=torch.long),
        attention_mask=torch.zeros((n, length), dtype=torch.long),
        prompt_index=torch.full((n, length), -1, dtype=torch.long),
        text_mask=torch.zeros((n, length), dtype=torch.bool),
        mask_positions=torch.tensor([r[3] for r in rows], dtype=torch.long),
    )
    for i, (out, prompt, is_text, _) in enumerate(rows):
        batch.input_ids[i, : len(out)] = torch.tensor(out)
        batch.attention_mask[i, : len(out)] = 1
        batch.prompt_index[i, : len(out)] = torch.tensor(prompt)
        batch.text_mask[i, : len(out)] = torch.tensor(is_text)
    device = input_ids.device
    return TemplatedBatch(**{k: v.to(device) for k, v in vars(batch).items()})
