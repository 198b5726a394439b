"""VecoTokenizer: XLM-R's layout without languages, the official translation task's with them."""

import json

import pytest
from transformers import AutoTokenizer

from plmkit.veco.tokenization import VecoTokenizer


def test_language_layouts_and_reload(tmp_path, tokenizer):
    plain = tokenizer("the film").input_ids
    assert plain[0] == tokenizer.bos_token_id and plain[-1] == tokenizer.eos_token_id
    tok = VecoTokenizer.from_pretrained(_save(tokenizer, tmp_path / "plain"))
    tok.src_lang, tok.tgt_lang = "de", "[en]"
    source, target = tok("the film").input_ids, tok(text_target="the film").input_ids
    words = plain[1:-1]
    assert source == words + [tok.eos_token_id, tok.convert_tokens_to_ids("[de]")]  # x </s> [src]
    assert target == words + [tok.eos_token_id, tok.convert_tokens_to_ids("[en]")]  # y </s> [tgt]
    tok.save_pretrained(tmp_path / "nlg")
    again = AutoTokenizer.from_pretrained(tmp_path / "nlg")
    assert isinstance(again, VecoTokenizer) and (again.src_lang, again.tgt_lang) == ("[de]", "[en]")
    assert again("the film").input_ids == source
    with pytest.raises(KeyError, match="not a language"):
        again.src_lang = "xx"


def _save(tokenizer, folder):
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "XLMRobertaTokenizer"  # no languages: plain XLM-R's tokenizer
    return folder
