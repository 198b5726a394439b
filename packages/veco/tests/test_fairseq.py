"""fairseq (the extra `plmkit-veco[fairseq]`): the `--user-dir` plugin trained and decoded by fairseq's own CLI,
checkpoint conversion both ways with equal logits (the reference values are fairseq's forward passes), and the
one-line error without the extra.

The fairseq-train run (tiny model, 6 updates, CPU) is shared by the tests marked slow."""

import argparse
import importlib.util
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plmkit.core.cli import main
from plmkit.veco.modeling import VecoForConditionalGeneration, VecoForPreTraining
from plmkit.veco.tiny import tiny_model_config
from plmkit.veco.tokenization import VecoTokenizer

needs_fairseq = pytest.mark.skipif(importlib.util.find_spec("fairseq") is None,
                                   reason="fairseq is not installed (pip install --no-build-isolation "
                                          "'plmkit-veco[fairseq]')")
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
WORDS = "the good film is fun a bad story who where it was best love".split()
TINY_FAIRSEQ = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "32",
                "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
                "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--max-source-positions", "128",
                "--max-target-positions", "128"]


def _write_pairs(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """Synthetic "de-en" pairs: the target is the source's words in reverse order."""
    rng = random.Random(0)
    splits = {}
    folder.mkdir(parents=True)
    for split, n in (("train", 48), ("validation", 8), ("test", 6)):
        pairs = []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
            pairs.append((" ".join(words), " ".join(reversed(words))))
        (folder / f"{split}.tsv").write_text("source\ttarget\n" + "".join(f"{a}\t{b}\n" for a, b in pairs))
        splits[split] = pairs
    return splits


def _fairseq(tool: str, *args: str) -> str:
    proc = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _teacher_forced(task, split: str, rows: int):
    """A batch as fairseq's task builds it (left-padded `x </s> [src]`, `prev_output_tokens` = `[tgt] y </s>`)."""
    task.load_dataset(split)
    dataset = task.datasets[split]
    return dataset.collater([dataset[i] for i in range(rows)])


def _our_logits(model: VecoForConditionalGeneration, batch) -> torch.Tensor:
    source = batch["net_input"]["src_tokens"]
    with torch.no_grad():
        return model(input_ids=source, attention_mask=source.ne(1).long(),
                     decoder_input_ids=batch["net_input"]["prev_output_tokens"]).logits


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer):
    """Pairs -> `plmkit veco export-fairseq-data` -> `fairseq-train --user-dir ...` (arch veco_small, tiny)."""
    root = tmp_path_factory.mktemp("fairseq")
    tokenizer.save_pretrained(root / "tok")
    pairs = _write_pairs(root / "de-en")
    assert main(["veco", "export-fairseq-data", "--data", str(root / "de-en"), "--tokenizer", str(root / "tok"),
                 "--out", str(root / "bin")]) == 0
    from plmkit.veco.fairseq import USER_DIR

    _fairseq("fairseq-train", str(root / "bin"), "--user-dir", str(USER_DIR), "--task",
             "translation_from_pretrained_veco", "--source-lang", "de", "--target-lang", "en", "--arch", "veco_small",
             *TINY_FAIRSEQ, "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "400", "--max-update", "6",
             "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--cpu", "--num-workers", "0",
             "--save-dir", str(root / "ckpt"), "--no-epoch-checkpoints", "--seed", "1", "--disable-validation")
    return root, pairs


@needs_fairseq
@pytest.mark.slow
def test_fairseq_trained_checkpoint_converts_with_equal_logits(trained, capsys):
    root, pairs = trained
    from plmkit.veco.fairseq.convert import load_fairseq

    assert main(["veco", "convert", str(root / "ckpt" / "checkpoint_last.pt"), "--tokenizer", str(root / "tok"),
                 "--out", str(root / "ours")]) == 0
    ours = VecoForConditionalGeneration.from_pretrained(root / "ours").eval()
    tokenizer = VecoTokenizer.from_pretrained(root / "ours")
    assert (tokenizer.src_lang, tokenizer.tgt_lang) == ("[de]", "[en]")
    start = tokenizer.language_id("en")
    assert ours.generation_config.decoder_start_token_id == ours.generation_config.eos_token_id == start
    fairseq_model, task = load_fairseq(root / "ckpt" / "checkpoint_last.pt")
    assert task.target_dictionary.symbols == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    batch = _teacher_forced(task, "valid", 8)
    # the data export and the task lay sequences out as our tokenizer does
    sources = [row[row.ne(1)].tolist() for row in batch["net_input"]["src_tokens"]]
    targets = [row[row.ne(1)].tolist() for row in batch["target"]]
    ids = batch["id"].tolist()
    assert sources == [tokenizer(pairs["validation"][i][0]).input_ids for i in ids]
    assert targets == [tokenizer(text_target=pairs["validation"][i][1]).input_ids for i in ids]
    with torch.no_grad():
        expected = fairseq_model(**batch["net_input"])[0]
    real = batch["target"].ne(1)
    torch.testing.assert_close(_our_logits(ours, batch)[real], expected[real], rtol=0, atol=1e-4)


@needs_fairseq
@pytest.mark.slow
def test_fairseq_generate_runs_on_the_plugin_and_scores_as_ours(trained):
    """fairseq-generate (beam 5) on the trained checkpoint gives fairseq's in-process beam search output; its
    hypotheses end with `[tgt]` (the generator's eos), and their per-token scores are our model's teacher-forced
    log-probabilities."""
    root, pairs = trained
    from plmkit.veco.fairseq import USER_DIR
    from plmkit.veco.fairseq.convert import from_fairseq, load_fairseq

    checkpoint = root / "ckpt" / "checkpoint_last.pt"
    output = _fairseq("fairseq-generate", str(root / "bin"), "--user-dir", str(USER_DIR), "--task",
                      "translation_from_pretrained_veco", "--source-lang", "de", "--target-lang", "en", "--path",
                      str(checkpoint), "--beam", "5", "--max-len-b", "12", "--cpu", "--batch-size", "8",
                      "--gen-subset", "test", "--required-batch-size-multiple", "1")
    printed = dict(line.split("\t", 1) for line in output.splitlines() if line[:2] in ("H-", "P-"))
    assert len(printed) == 2 * len(pairs["test"])
    fairseq_model, task = load_fairseq(checkpoint)
    generator = task.build_generator([fairseq_model], argparse.Namespace(beam=5, max_len_b=12))
    batch = _teacher_forced(task, "test", len(pairs["test"]))
    tokenizer = VecoTokenizer.from_pretrained(root / "tok")
    ours = from_fairseq(checkpoint, tokenizer)
    end = tokenizer.language_id("en")
    for i, hypotheses in zip(batch["id"].tolist(), task.inference_step(generator, [fairseq_model], batch),
                             strict=True):
        best = hypotheses[0]
        tokens, scores = best["tokens"], best["positional_scores"]
        assert tokens[-1] == end
        assert printed[f"H-{i}"].split("\t")[1] == task.target_dictionary.string(tokens, extra_symbols_to_ignore={end})
        printed_scores = torch.tensor([float(p) for p in printed[f"P-{i}"].split()])
        torch.testing.assert_close(printed_scores, scores / math.log(2), rtol=0, atol=1e-4)  # printed in base 2
        inputs = tokenizer(pairs["test"][i][0], return_tensors="pt")
        with torch.no_grad():
            logits = ours(**inputs, labels=tokens[None]).logits
        ours_scores = logits.log_softmax(-1)[0].gather(-1, tokens[:, None])[:, 0]
        torch.testing.assert_close(ours_scores, scores, rtol=0, atol=1e-4)


@needs_fairseq
def test_ours_to_fairseq_and_back(tmp_path, tokenizer):
    """A random VECO NLG model (decoder from pre-trained layers 1, 0) -> `plmkit veco convert` -> fairseq loads it
    with the same logits -> converted back, identical weights; fairseq's `--keep-decoder-layers` picks layers."""
    from plmkit.veco.fairseq.convert import from_fairseq, load_fairseq

    torch.manual_seed(0)
    pre = VecoForPreTraining(tiny_model_config(tokenizer, hidden_dropout_prob=0.1))
    start = tokenizer.language_id("en")
    model = VecoForConditionalGeneration.from_pretraining(pre, [1, 0], decoder_start_token_id=start).eval()
    model.save_pretrained(tmp_path / "ours")
    tokenizer.src_lang, tokenizer.tgt_lang = "de", "en"
    try:
        tokenizer.save_pretrained(tmp_path / "ours")
    finally:
        tokenizer.src_lang = tokenizer.tgt_lang = None
    assert main(["veco", "convert", str(tmp_path / "ours"), "--out", str(tmp_path / "fs")]) == 0
    checkpoint = tmp_path / "fs" / "checkpoint.pt"
    _write_pairs(tmp_path / "de-en")
    assert main(["veco", "export-fairseq-data", "--data", str(tmp_path / "de-en"), "--tokenizer",
                 str(tmp_path / "ours"), "--out", str(tmp_path / "bin")]) == 0
    fairseq_model, task = load_fairseq(checkpoint, data=tmp_path / "bin")
    assert fairseq_model.args.dropout == 0.1 and fairseq_model.args.arch == "veco_small"
    batch = _teacher_forced(task, "test", 6)
    with torch.no_grad():
        expected = fairseq_model(**batch["net_input"])[0]
    real = batch["target"].ne(1)
    torch.testing.assert_close(_our_logits(model, batch)[real], expected[real], rtol=0, atol=1e-4)
    back = from_fairseq(checkpoint, VecoTokenizer.from_pretrained(tmp_path / "ours")).state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(back[key], value), key
    # fairseq's own loading with --keep-decoder-layers: a 1-layer decoder from the checkpoint's decoder layer 1
    shallow, _ = load_fairseq(checkpoint, overrides={"decoder_layers": 1, "keep_decoder_layers": "1"})
    assert len(shallow.decoder.layers) == 1
    for key, value in shallow.decoder.layers[0].state_dict().items():
        assert torch.equal(value, model.model.decoder.layers[1].state_dict()[key]), key


@needs_fairseq
def test_a_cut_down_dictionary_keeps_the_rows_the_resized_dict_map_marks(tmp_path, tokenizer):
    """`--resized-dict-map`: a checkpoint written with the full vocabulary, loaded by fairseq with a dictionary of
    some of its symbols (the official per-language-pair fine-tuning), keeps each kept symbol's own embedding row."""
    from plmkit.veco.fairseq.convert import load_fairseq, to_fairseq

    torch.manual_seed(0)
    pre = VecoForPreTraining(tiny_model_config(tokenizer))
    model = VecoForConditionalGeneration.from_pretraining(pre, [0, 1], decoder_start_token_id=tokenizer.language_id("en"))
    to_fairseq(model, tokenizer, tmp_path / "full", "de", "en")
    full = (tmp_path / "full" / "dict.en.txt").read_text().splitlines()
    kept = [i % 3 != 1 or line.startswith(("[de]", "[en]", "<mask>")) for i, line in enumerate(full)]
    (tmp_path / "cut").mkdir()
    for lang in ("de", "en"):
        (tmp_path / "cut" / f"dict.{lang}.txt").write_text("".join(f"{line}\n" for line, k in zip(full, kept, strict=True) if k))
    (tmp_path / "map.txt").write_text("".join(f"{int(k)}\n" for k in kept))
    checkpoint = tmp_path / "full" / "checkpoint.pt"
    with pytest.raises(ValueError, match="pass --resized-dict-map"):
        load_fairseq(checkpoint, data=tmp_path / "cut")
    cut, task = load_fairseq(checkpoint, data=tmp_path / "cut", overrides={"resized_dict_map": str(tmp_path / "map.txt")})
    dictionary, shared = task.target_dictionary, model.model.shared.weight
    assert len(dictionary) == 4 + sum(kept) < len(tokenizer)
    for symbol in dictionary.symbols:
        row = cut.encoder.embed_tokens.weight[dictionary.index(symbol)]
        assert torch.equal(row, shared[tokenizer.convert_tokens_to_ids(symbol)]), symbol
    assert torch.equal(cut.decoder.output_projection.weight, cut.encoder.embed_tokens.weight)


@needs_fairseq
def test_kept_rows_follows_the_official_layouts():
    from plmkit.veco.fairseq.model import kept_rows

    assert kept_rows(10, 10, True, None) is None
    assert kept_rows(11, 10, False, None) == [True] * 10 + [False]  # pre-training's <mask> row is dropped
    # official layout: 4 specials, dict.txt (3 lines), <mask>; kept when the dictionary has it
    assert kept_rows(8, 6, True, ["1", "0", "0", ""]) == [True] * 4 + [True, False, False] + [True]
    assert kept_rows(8, 6, False, ["1", "0", "1"]) == [True] * 4 + [True, False, True] + [False]
    # ours: <mask> is a dict.txt entry like the others
    assert kept_rows(8, 6, True, ["1", "0", "1", "0"]) == [True] * 4 + [True, False, True, False]
    for dict_map, message in ((None, "pass --resized-dict-map"), (["1", "2", "1"], "must be 0 or 1"),
                              (["1"], "has 1 lines"), (["1", "1", "1"], "keeps 8 rows")):
        with pytest.raises(ValueError, match=message):
            kept_rows(8, 6, True, dict_map)


def test_without_fairseq_the_commands_fail_with_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    """fairseq missing (its import fails): the rest of plmkit.veco works, the fairseq commands end in one line."""
    monkeypatch.setitem(sys.modules, "fairseq", None)  # `import fairseq` raises ImportError
    for name in [m for m in sys.modules if m.startswith("plmkit.veco.fairseq")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r"pip install --no-build-isolation 'plmkit-veco\[fairseq\]'"):
        importlib.import_module("plmkit.veco.fairseq.convert")
    for argv in (["convert", str(tmp_path), "--out", str(tmp_path / "out")], ["fairseq-user-dir"],
                 ["export-fairseq-data", "--data", str(tmp_path), "--tokenizer", str(tmp_path), "--out",
                  str(tmp_path)]):
        assert main(["veco", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["plmkit: error: plmkit.veco.fairseq needs fairseq, the optional extra: pip install "
                       "--no-build-isolation 'plmkit-veco[fairseq]'"], err
