"""Words from sub-word tokens, and the word classes every part of the package shares: function words, punctuation.

`word_ids` groups the tokens of a sequence into words by the tokenizer's own conventions, so it works on token ids
alone (after encoding, the text is gone): WordPiece continues a word with a `##` piece (BERT, MiniLM), SentencePiece
starts one with `▁` (XLM-R, ALBERT), byte-level BPE with `Ġ` (RoBERTa, GPT-2). Special tokens and padding get -1.
The K-B/K-F proxy (see `plmkit.knowledge_pretraining.analysis`) and the masking policies read words this way.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["FUNCTION_WORDS", "is_function_word", "is_punctuation", "word_ids", "word_ids_from_tokens", "words_of"]

# English function words (closed classes): articles and determiners, pronouns, prepositions, conjunctions,
# auxiliaries and modals, negation, common adverbial particles. Written for this package.
FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every either neither no none all both half several many much more most
few fewer less least other another such what which whose whichever whatever
i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its itself we us
our ours ourselves they them their theirs themselves one ones oneself who whom whoever somebody someone something
anybody anyone anything nobody nothing everybody everyone everything
about above across after against along amid among amongst around as at before behind below beneath beside besides
between beyond by despite down during except for from in inside into like near of off on onto out outside over past
per since than through throughout till to toward towards under underneath unlike until up upon via with within without
and but or nor so yet because although though while whereas if unless whether when whenever where wherever why how
once then therefore thus hence however also too either
be am is are was were been being have has had having do does did doing done shall should will would may might must
can could ought
not n't never
very just only even still already quite rather almost here there now again ever often always sometimes usually
""".split())

_CONTINUATION = "##"  # WordPiece
_WORD_STARTS = ("▁", "Ġ")  # SentencePiece, byte-level BPE


def is_punctuation(word: str) -> bool:
    """True for a non-empty word made only of punctuation and symbols (Unicode categories P* and S*)."""
    return bool(word) and all(unicodedata.category(ch)[0] in "PS" for ch in word)


def is_function_word(word: str) -> bool:
    return word.lower() in FUNCTION_WORDS


def word_ids_from_tokens(tokens: Sequence[str], special: set[str] | frozenset[str] = frozenset()) -> list[int]:
    """The word index of every token (counted from 0 along the sequence), -1 for special tokens (`special`).

    A token starts a new word unless it is a WordPiece continuation (`##...`); with SentencePiece or byte-level BPE
    vocabularies (tokens marked `▁`/`Ġ` where a word starts), a token starts a word only when it carries the mark.
    A punctuation token is always its own word (BERT's pre-tokenizer splits it off; SentencePiece may glue it).
    """
    marks = "".join(_WORD_STARTS)
    marked = any(t.startswith(_WORD_STARTS) for t in tokens if t not in special)
    out: list[int] = []
    word, previous = -1, None  # previous: the last non-special token, None after a special token
    for token in tokens:
        if token in special:
            out.append(-1)
            previous = None
            continue
        continues = token.startswith(_WORD_STARTS) is False if marked else token.startswith(_CONTINUATION)
        if (previous is None or not continues or is_punctuation(token.lstrip(marks))
                or is_punctuation(previous.lstrip(marks))):
            word += 1
        out.append(word)
        previous = token
    return out


def word_ids(tokenizer: Any, input_ids: torch.Tensor | Sequence[int], attention_mask: Any = None) -> list[int]:
    """`word_ids_from_tokens` for one sequence of ids (padding, where `attention_mask` is 0, gets -1)."""
    ids = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)
    special = set(tokenizer.all_special_tokens)
    out = word_ids_from_tokens(tokenizer.convert_ids_to_tokens(ids), special)
    if attention_mask is not None:
        mask = attention_mask.tolist() if isinstance(attention_mask, torch.Tensor) else list(attention_mask)
        out = [w if m else -1 for w, m in zip(out, mask, strict=True)]
    return out


def words_of(tokenizer: Any, input_ids: torch.Tensor | Sequence[int]) -> list[tuple[str, list[int]]]:
    """(word text, token positions) of every word of one sequence, in order (special tokens left out)."""
    ids = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)
    groups: dict[int, list[int]] = {}
    for position, word in enumerate(word_ids(tokenizer, ids)):
        if word >= 0:
            groups.setdefault(word, []).append(position)
    out = []
    for positions in groups.values():
        text = tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens([ids[p] for p in positions]))
        out.append((text.strip(), positions))
    return out
