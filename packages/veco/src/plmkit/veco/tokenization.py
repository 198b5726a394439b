"""`VecoTokenizer`: XLM-R's SentencePiece tokenizer plus language tokens (`[en]`, `[de]`, ...) and the official
translation task's layout.

Without languages it is XLM-R's tokenizer (`<s> x </s>`, pairs `<s> x </s></s> y </s>`), for pre-training and NLU.
With `src_lang` / `tgt_lang` (language tokens such as "[de]" / "[en]") it lays sequences out as AliceMind/VECO's
`translation_from_pretrained_veco` task does (`load_langpair_dataset(..., append_source_id=True)`): sources
`x </s> [src]`, targets `y </s> [tgt]`; the NLG model starts decoding with `[tgt]` and stops at it (`[tgt]` is the
generator's eos), which `plmkit.veco.modeling.VecoForConditionalGeneration` sets up. The same convention as
mBART-cc25's `MBartTokenizer` (transformers), with VECO's bracketed language tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import processors
from transformers import XLMRobertaTokenizer

__all__ = ["LANGUAGE_TOKEN", "VecoTokenizer", "add_language_tokens", "language_token"]

LANGUAGE_TOKEN = "[{}]"


def language_token(code: str) -> str:
    """"de" -> "[de]" (a token already in brackets is kept)."""
    return code if code.startswith("[") and code.endswith("]") else LANGUAGE_TOKEN.format(code)


class VecoTokenizer(XLMRobertaTokenizer):
    """See the module docstring. `languages()` lists the language tokens this tokenizer has."""

    def __init__(self, *args: Any, src_lang: str | None = None, tgt_lang: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, src_lang=src_lang, tgt_lang=tgt_lang, **kwargs)
        self._src_lang: str | None = None
        self._tgt_lang: str | None = None
        if src_lang:
            self.src_lang = src_lang
        if tgt_lang:
            self.tgt_lang = tgt_lang
        self._switch_to_input_mode()

    # -- languages ----------------------------------------------------------------------------------------------------
    def languages(self) -> list[str]:
        """The language tokens of the vocabulary (special tokens in brackets, e.g. "[de]")."""
        return [t for t in self.all_special_tokens if t.startswith("[") and t.endswith("]") and len(t) > 2]

    def _check_language(self, code: str) -> str:
        token = language_token(code)
        if token not in self.languages():
            raise KeyError(f"{code!r} is not a language of this tokenizer; it has {self.languages() or 'none'} "
                           f"(add one with plmkit.veco.tokenization.add_language_tokens)")
        return token

    @property
    def src_lang(self) -> str | None:
        return self._src_lang

    @src_lang.setter
    def src_lang(self, code: str | None) -> None:
        self._src_lang = self._check_language(code) if code else None
        self.init_kwargs["src_lang"] = self._src_lang
        self._switch_to_input_mode()

    @property
    def tgt_lang(self) -> str | None:
        return self._tgt_lang

    @tgt_lang.setter
    def tgt_lang(self, code: str | None) -> None:
        self._tgt_lang = self._check_language(code) if code else None
        self.init_kwargs["tgt_lang"] = self._tgt_lang

    # -- layouts ------------------------------------------------------------------------------------------------------
    def _set_template(self, language: str | None) -> None:
        bos, eos = str(self.bos_token), str(self.eos_token)
        if language is None:  # XLM-R's layout
            self._tokenizer.post_processor = processors.TemplateProcessing(
                single=[bos, "$A", eos], pair=[bos, "$A", eos, eos, "$B", eos],
                special_tokens=[(bos, self.bos_token_id), (eos, self.eos_token_id)],
            )
            return
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=["$A", eos, language], pair=["$A", "$B", eos, language],
            special_tokens=[(eos, self.eos_token_id), (language, self.convert_tokens_to_ids(language))],
        )

    def _switch_to_input_mode(self) -> None:
        if getattr(self, "_src_lang", None) is not None or hasattr(self, "_tokenizer"):
            self._set_template(getattr(self, "_src_lang", None))

    def _switch_to_target_mode(self) -> None:
        self._set_template(self._tgt_lang if self._tgt_lang is not None else self._src_lang)

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """Without languages this is XLM-R's tokenizer, and saves as one (`tokenizer_class` XLMRobertaTokenizer), so
        plain transformers loads it; with languages it saves as `VecoTokenizer` (plmkit-veco loads it)."""
        out = super().save_pretrained(save_directory, *args, **kwargs)
        if self._src_lang is None and self._tgt_lang is None:
            path = Path(save_directory) / "tokenizer_config.json"
            if path.exists():
                config = json.loads(path.read_text(encoding="utf-8"))
                config["tokenizer_class"] = "XLMRobertaTokenizer"
                config.pop("src_lang", None)
                config.pop("tgt_lang", None)
                path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return out

    def language_id(self, code: str) -> int:
        return int(self.convert_tokens_to_ids(self._check_language(code)))


def add_language_tokens(tokenizer: Any, codes: list[str]) -> list[str]:
    """Add `[code]` special tokens (after the SentencePiece vocabulary) for every code; returns the tokens."""
    tokens = [language_token(c) for c in codes]
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    return tokens
