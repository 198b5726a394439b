"""`plmkit veco` commands on synthetic data (no download): prepare-data, vocab, retrieve, and the retrieval metric."""

import json

import pytest
import torch

from plmkit.core.cli import main
from plmkit.veco import data as bible
from plmkit.veco.evaluation import default_layer, retrieval_precision_at_1
from plmkit.veco.modeling import VecoForPreTraining
from plmkit.veco.tiny import tiny_model_config
from plmkit.veco.tokenization import VecoTokenizer

WORDS = "light water earth heaven night day king land people house word spirit".split()


def _fake_verses(names):
    """Five verses in two chapters of every book, per translation, distinct across books and languages."""
    out = {}
    for name in names:
        lang = bible.TRANSLATIONS[name].language
        out[name] = {(b, c, v): f"{lang} {WORDS[(b + v) % len(WORDS)]} {WORDS[(c * v) % len(WORDS)]} {b} {c} {v}"
                     for b in range(1, 67) for c in (1, 2) for v in range(1, 6)}
    return out


def test_prepare_data_and_vocab_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bible, "load_verses", _fake_verses)
    monkeypatch.setattr(bible, "prepare_bible", lambda force=False: None)
    out = tmp_path / "data"
    assert main(["veco", "prepare-data", "--out", str(out), "--pairs", "de-en,fr-en", "--mono", "en",
                 "--mt", "de-en", "--classify", "en,de"]) == 0
    files = json.loads(capsys.readouterr().out)
    assert files["mt/de-en/test.tsv"] == 6 * 2 * 5  # the six test books, 2 chapters x 5 verses
    assert files["classify/train.en.jsonl"] == files["classify/train.de.jsonl"] == 54 * 2 * 5
    summary = json.loads((out / "data.json").read_text())
    assert summary["translations"]["en"] == ["web", "kjv", "bbe"] and summary["test_books"] == list(bible.TEST_BOOKS)
    tok = tmp_path / "tok"
    assert main(["veco", "vocab", "--data", str(out), "--vocab_size", "40", "--num_threads", "1", "--out",
                 str(tok)]) == 0
    tokenizer = VecoTokenizer.from_pretrained(tok)
    assert tokenizer.languages() == ["[de]", "[en]", "[fr]"]
    assert len(tokenizer) == 43 and tokenizer.language_id("fr") == 42  # appended after the 40 pieces
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]


def test_retrieval_precision_at_1(tmp_path, tokenizer, capsys):
    torch.manual_seed(0)
    model = VecoForPreTraining(tiny_model_config(tokenizer)).eval()
    texts = ["the good film", "a bad story", "who is it", "the film is good", "where is the film"]
    assert retrieval_precision_at_1(model, tokenizer, texts, texts) == 1.0  # each text is nearest to itself
    assert retrieval_precision_at_1(model, tokenizer, texts, texts[1:] + texts[:1]) < 1.0
    assert default_layer(24) == 18 and default_layer(4) == 3  # the official Tatoeba setting: layer 18 of 24
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (tmp_path / "pairs.tsv").write_text("source\ttarget\n" + "".join(f"{t}\t{t}\n" for t in texts))
    assert main(["veco", "retrieve", "--model", str(folder), "--tsv", str(tmp_path / "pairs.tsv"), "--layer", "1",
                 "--num_threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"precision_at_1": 1.0, "pairs": 5,
                                                                            "layer": 1}
    with pytest.raises(bible.DataError, match="layer 9 does not exist"):
        retrieval_precision_at_1(model, tokenizer, texts, texts, layer=9)
