"""UPT's Prompt-Options-Verbalizer (POV) format, on top of the shared templates.

A POV input is text, then options naming **every** candidate label word, then a prompt with one [MASK]
(Wang et al., 2022, Fig. 1), e.g. `It is a wonderful movie. Is it great or terrible ? It is [MASK] .`
`pov_template` writes that as an ordinary template string (`"{text} Is it great or terrible ? It is {mask} ."`),
so `templates.apply_template` builds it inside the model's forward and its truncation rule (cut the text, never a
literal or the [MASK]) keeps the options and the prompt.

Multi-token label words: a label word is scored by the **first** sub-token of `" " + word` (the options text still
spells the whole word). Two label words of one verbalizer that share their first sub-token are an error, since
they could not be told apart at [MASK].

`apply_row_templates` applies a different template to each row (multi-task batches, KSMLM, UPT-SE prompts).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from plmkit.core.training import MethodError
from plmkit.prompt_tuning.templates import TemplatedBatch, apply_template

__all__ = ["apply_row_templates", "label_word_ids", "options_text", "pov_template"]


def options_text(words: list[str], expression: str = "Is it {options} ?") -> str:
    """The options part, naming every candidate: 'Is it great or terrible ?', 'Is it a, b or c ?'."""
    if len(words) < 2:
        raise MethodError(f"options need at least two candidate words, got {words}")
    if "{options}" not in expression:
        raise MethodError(f"options expression {expression!r} has no {{options}} placeholder")
    listed = ", ".join(words[:-1]) + " or " + words[-1]
    return expression.replace("{options}", listed)


def pov_template(
    words: list[str], prompt: str = "It is {mask} .", expression: str = "Is it {options} ?", pair: bool = False
) -> str:
    """The POV template string: text (or `{text_a} {text_b}`), then the options, then the prompt with `{mask}`."""
    if prompt.count("{mask}") != 1:
        raise MethodError(f"the prompt {prompt!r} must contain exactly one {{mask}}")
    text = "{text_a} {text_b}" if pair else "{text}"
    return f"{text} {options_text(words, expression)} {prompt}"


def label_word_ids(words: list[str], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token scored for each label word: the first sub-token of `" " + word` (module docstring)."""
    ids: list[int] = []
    for word in words:
        pieces = tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]
        if not pieces:
            raise MethodError(f"label word {word!r} tokenizes to nothing")
        ids.append(pieces[0])
    clashes = {tokenizer.convert_ids_to_tokens(i) for i in ids if ids.count(i) > 1}
    if clashes:
        raise MethodError(
            f"label words {words} share first sub-token(s) {sorted(clashes)}: multi-token words are scored by their "
            "first sub-token, so these cannot be told apart; choose other words"
        )
    return ids


def apply_row_templates(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    templates: list[list[int]],
    row_template: torch.Tensor,
    **ids: int,
) -> TemplatedBatch:
    """`apply_template` with template `templates[row_template[i]]` for row i; rows are grouped by template and the
    groups merged back in order, right-padded. `ids`: cls_id, sep_id, mask_id, pad_id, max_length."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    groups = {int(t): torch.nonzero(row_template == t).flatten() for t in row_template.unique()}
    parts = {t: apply_template(input_ids[rows], attention_mask[rows], templates[t], **ids) for t, rows in groups.items()}
    n, length = len(input_ids), max(p.input_ids.shape[1] for p in parts.values())
    out = TemplatedBatch(
        input_ids=input_ids.new_full((n, length), ids["pad_id"]),
        attention_mask=input_ids.new_zeros((n, length)),
        prompt_index=input_ids.new_full((n, length), -1),
        text_mask=torch.zeros((n, length), dtype=torch.bool, device=input_ids.device),
        mask_positions=input_ids.new_zeros(n),
    )
    for t, rows in groups.items():
        part, width = parts[t], parts[t].input_ids.shape[1]
        out.input_ids[rows, :width] = part.input_ids
        out.attention_mask[rows, :width] = part.attention_mask
        out.prompt_index[rows, :width] = part.prompt_index
        out.text_mask[rows, :width] = part.text_mask
        out.mask_positions[rows] = part.mask_positions
    return out
