"""`tiny-veco`: a random VECO (hidden 32, 2 layers, 4 heads, FFN 64) with a tiny SentencePiece-style tokenizer built
in code (the core's `tiny-xlmr` pieces plus the language tokens [en], [de], [fr]), for tests and the contract kit."""

from __future__ import annotations

from typing import Any

from plmkit.veco.configuration import VecoConfig
from plmkit.veco.tokenization import VecoTokenizer, add_language_tokens

__all__ = ["TINY", "register_alias", "tiny_config", "tiny_model_config", "tiny_tokenizer"]

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=130)
TINY_LANGUAGES = ("en", "de", "fr")


def tiny_tokenizer() -> VecoTokenizer:
    from plmkit.core.models import ALIASES

    base = ALIASES["tiny-xlmr"].tokenizer()  # XLM-R layout: <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4
    tokenizer = VecoTokenizer(vocab=base._vocab, model_max_length=128)
    add_language_tokens(tokenizer, list(TINY_LANGUAGES))
    return tokenizer


def tiny_config(vocab_size: int, **kw: Any) -> VecoConfig:
    return VecoConfig(vocab_size=vocab_size, **{**TINY, **kw})


def register_alias() -> None:
    """Add `tiny-veco` to the core's model aliases (run by the `plmkit.models` entry point)."""
    from plmkit.core.models import ALIASES, ModelAlias

    ALIASES.setdefault("tiny-veco", ModelAlias(
        "random VECO (cross-lingual encoder with plug-in cross-attention), hidden 32, 2 layers, for tests",
        config=tiny_config, tokenizer=tiny_tokenizer))


def tiny_model_config(tokenizer: Any, dropout: bool = False, **kw: Any) -> VecoConfig:
    """The tiny config for `tokenizer`'s vocabulary, dropout off unless asked (exact tests)."""
    off = {} if dropout else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    return VecoConfig(vocab_size=len(tokenizer), **{**TINY, **off, **kw})
