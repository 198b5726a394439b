"""`plmkit tokenizer train`: SentencePiece tokenizers that transformers and load_model load."""

import random

import pytest
import sentencepiece as spm
import torch
from transformers import AutoTokenizer

from plmkit.core.errors import ConfigError, DataError
from plmkit.core.losses import mask_tokens
from plmkit.core.models import load_model
from plmkit.core.tokenizers import tokenizer_command, train_tokenizer

SYLLABLES = "ka ri to me su na lo pe vi da mu ge ro fa ne shi tu ba ko li".split()
EXTRA = "über café naïve Straße élève Zürich".split()
COMBOS = [("unigram", "xlmr"), ("unigram", "bert"), ("bpe", "xlmr"), ("bpe", "bert")]
SPECIALS = {"xlmr": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(150)] + EXTRA
    lines = []
    for _ in range(400):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(3, 14)))
        lines.append(sentence[0].upper() + sentence[1:] + rng.choice([".", "!", "?", ","]))
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, lines


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """The four model type x layout combinations, trained once for the module."""
    path, _ = corpus
    folders = {}
    for model_type, special in COMBOS:
        folder = tmp_path_factory.mktemp(f"{model_type}-{special}")
        train_tokenizer([path], folder, vocab_size=200, model_type=model_type, special=special, num_threads=1,
                        character_coverage=1.0, overwrite=True)
        folders[model_type, special] = folder
    return folders


@pytest.mark.parametrize("model_type, special", COMBOS)
def test_trained_tokenizer_loads_with_auto_tokenizer_and_encodes_like_sentencepiece(trained, corpus, model_type,
                                                                                    special):
    folder, (_, lines) = trained[model_type, special], corpus
    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok) == 200
    expected_class = "XLMRobertaTokenizer" if (model_type, special) == ("unigram", "xlmr") else "TokenizersBackend"
    assert type(tok).__name__ == expected_class
    assert tok.convert_tokens_to_ids(SPECIALS[special]) == [0, 1, 2, 3, 4]
    sp = spm.SentencePieceProcessor(model_file=str(folder / "sentencepiece.model"))
    for line in lines[:100]:
        ids = tok(line, add_special_tokens=False)["input_ids"]
        assert ids == sp.encode(line)
        assert tok.decode(ids) == line  # character_coverage 1.0: every character has a piece, text round-trips
    assert tok.unk_token_id not in tok(lines[0])["input_ids"]


def test_xlmr_layout(trained):
    tok = AutoTokenizer.from_pretrained(trained["unigram", "xlmr"])
    assert (tok.bos_token, tok.pad_token, tok.eos_token, tok.unk_token, tok.mask_token) == tuple(SPECIALS["xlmr"])
    assert (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.mask_token_id) == (0, 2, 1, 4)
    one = tok("Kari tome")["input_ids"]
    pair = tok("Kari tome", "Suna")
    assert one[0] == 0 and one[-1] == 2
    body = tok("Suna", add_special_tokens=False)["input_ids"]
    assert pair["input_ids"] == one + [2] + body + [2] and "token_type_ids" not in pair
    assert tok.model_max_length == 512


def test_bert_layout(trained):
    tok = AutoTokenizer.from_pretrained(trained["bpe", "bert"])
    assert (tok.cls_token, tok.sep_token, tok.pad_token, tok.unk_token, tok.mask_token) == (
        "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]")
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (0, 1, 2, 3, 4)
    one = tok("Kari tome")
    pair = tok("Kari tome", "Suna")
    body = tok("Suna", add_special_tokens=False)["input_ids"]
    assert one["input_ids"][0] == 2 and one["input_ids"][-1] == 3
    assert pair["input_ids"] == one["input_ids"] + body + [3]
    assert pair["token_type_ids"] == [0] * len(one["input_ids"]) + [1] * (len(body) + 1)
    assert tok.tokenize("kari [MASK] tome").count("[MASK]") == 1


def test_training_is_reproducible_and_recorded(corpus, trained, tmp_path):
    import json

    path, _ = corpus
    train_tokenizer([path], tmp_path, vocab_size=200, model_type="unigram", special="xlmr", num_threads=1,
                    character_coverage=1.0)
    assert (tmp_path / "tokenizer.json").read_bytes() == (trained["unigram", "xlmr"] / "tokenizer.json").read_bytes()
    record = json.loads((tmp_path / "tokenizer_training.json").read_text())
    assert record["lines"] == [400] and record["num_threads"] == 1 and record["vocab_size"] == 200


def test_command_trains_and_reports(corpus, tmp_path, capsys):
    path, _ = corpus
    out = tmp_path / "tok"
    assert tokenizer_command(["train", "--input", str(path), "--vocab_size", "150", "--model_type", "bpe",
                              "--special", "bert", "--output_dir", str(out), "--num_threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "bpe tokenizer of 150 tokens" in printed and "[MASK]=4" in printed and str(out) in printed
    assert len(AutoTokenizer.from_pretrained(out)) == 150
    with pytest.raises(ConfigError, match="not empty; pass --overwrite"):
        tokenizer_command(["train", "--input", str(path), "--output_dir", str(out), "--vocab_size", "150"])
    # several files, comma-separated or space-separated
    both = tmp_path / "both"
    assert tokenizer_command(["train", "--input", f"{path},{path}", "--vocab_size", "150", "--output_dir", str(both),
                              "--num_threads", "1"]) == 0
    assert "on " + f"{path}, {path}" in capsys.readouterr().out


def test_corpus_and_vocab_errors(corpus, tmp_path):
    path, _ = corpus
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty.txt: the corpus is empty"):
        train_tokenizer([empty], tmp_path / "a", vocab_size=100)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("fine line\ncaf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt: line 2 is not UTF-8 text"):
        train_tokenizer([latin1], tmp_path / "b", vocab_size=100)
    with pytest.raises(DataError, match="missing.txt: no such file"):
        train_tokenizer([tmp_path / "missing.txt"], tmp_path / "c", vocab_size=100)
    with pytest.raises(ConfigError, match=r"--vocab_size 50000 is more than .*corpus.txt supports for a unigram model "
                                          r"\(at most \d+ pieces\): lower --vocab_size"):
        train_tokenizer([path], tmp_path / "d", vocab_size=50000, num_threads=1)
    with pytest.raises(ConfigError, match=r"--vocab_size 12 is smaller than the \d+ characters"):
        train_tokenizer([path], tmp_path / "e", vocab_size=12, num_threads=1)
    with pytest.raises(ConfigError, match="--special must be one of"):
        train_tokenizer([path], tmp_path / "f", special="gpt2")
    assert not any((tmp_path / name).exists() for name in "abcdef")  # nothing written on errors


@pytest.mark.parametrize("special, model_type", [("xlmr", "xlm-roberta"), ("bert", "bert")])
def test_a_tiny_masked_lm_built_on_the_tokenizer_trains_a_step(trained, corpus, special, model_type):
    folder, (_, lines) = trained["unigram", special], corpus
    model, tok = load_model(model_type, kind="masked-lm", tokenizer=str(folder), seed=0, model_config={
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "max_position_embeddings": 64})
    assert model.config.vocab_size == 200 and model.config.pad_token_id == tok.pad_token_id
    batch = tok(lines[:8], padding=True, truncation=True, max_length=48, return_tensors="pt")
    maskable = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], torch.tensor(tok.all_special_ids))
    inputs, labels = mask_tokens(batch["input_ids"], maskable, tok.mask_token_id, len(tok), probability=0.3,
                                 generator=torch.Generator().manual_seed(0))
    assert (labels != -100).any()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    loss = model(**{**batch, "input_ids": inputs}, labels=labels).loss
    loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(**{**batch, "input_ids": inputs}, labels=labels).loss
    assert torch.isfinite(loss) and after < loss
