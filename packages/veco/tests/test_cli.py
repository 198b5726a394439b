"""Through the `plmkit` command: CA-MLM pre-training with its terms logged, translation with the core seq2seq task
on a VECO encoder-decoder, plug-in classification, and one-line errors for bad input."""

import json

import pytest
import torch

from plmkit.core.cli import main
from plmkit.veco.modeling import VecoForPreTraining
from plmkit.veco.tiny import tiny_model_config
from plmkit.veco.tokenization import VecoTokenizer

PAIRS = [("der gute film", "the good film"), ("eine schlechte geschichte", "a bad story"),
         ("wer ist es", "who is it"), ("der film ist gut", "the film is good"), ("es war schlecht", "it was bad"),
         ("die beste geschichte", "the best story"), ("wo ist der film", "where is the film"),
         ("ich liebe es", "i love it")]
COMMON = ["--report_to", "none", "--disable_tqdm", "true", "--num_threads", "1", "--per_device_train_batch_size", "4",
          "--per_device_eval_batch_size", "8", "--learning_rate", "1e-3", "--save_strategy", "no", "--max_length", "32"]


def _error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and err[-1].startswith("plmkit: error: "), err
    return err[-1]


def test_ca_mlm_pretraining_logs_each_term(tmp_path):
    rows = "".join(json.dumps({"x": a, "y": b}) + "\n" for a, b in PAIRS)
    (tmp_path / "train.jsonl").write_text(rows)
    (tmp_path / "validation.jsonl").write_text(rows)
    out = tmp_path / "run"
    assert main(["train", "--task", "veco_pretrain", "--method", "veco", "--model_name_or_path", "tiny-veco",
                 "--train_file", str(tmp_path / "train.jsonl"), "--validation_file", str(tmp_path / "validation.jsonl"),
                 "--output_dir", str(out), "--max_steps", "4", "--logging_steps", "2", *COMMON]) == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = next(h for h in history if "loss/mlm_x" in h)
    terms = [logged[f"loss/{t}"] for t in ("mlm_x", "mlm_y", "ca_mlm_x", "ca_mlm_y")]
    assert logged["loss/task"] == pytest.approx(sum(terms), rel=1e-4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"eval_mlm_x_accuracy", "eval_ca_mlm_y_loss", "eval_masked_accuracy"} <= set(metrics)


def test_seq2seq_trains_a_veco_encoder_decoder(tmp_path, pretrained_dir):
    rows = "source\ttarget\n" + "".join(f"{a}\t{b}\n" for a, b in PAIRS)
    (tmp_path / "train.tsv").write_text(rows)
    (tmp_path / "test.tsv").write_text(rows)
    nlg = tmp_path / "nlg"
    assert main(["veco", "init-nlg", "--model", str(pretrained_dir), "--src", "de", "--tgt", "en",
                 "--keep_decoder_layers", "1", "--out", str(nlg)]) == 0
    tokenizer = VecoTokenizer.from_pretrained(nlg)  # the official task's layout: x </s> [de], y </s> [en]
    de, en, eos = tokenizer.language_id("de"), tokenizer.language_id("en"), tokenizer.eos_token_id
    assert tokenizer("der film").input_ids[-2:] == [eos, de] and tokenizer(text_target="the film").input_ids[-2:] == [eos, en]
    out = tmp_path / "run"
    assert main(["train", "--task", "seq2seq", "--task.num_beams", "2", "--task.max_target_length", "12",
                 "--label_smoothing_factor", "0.1",
                 "--model_name_or_path", str(nlg), "--train_file", str(tmp_path / "train.tsv"),
                 "--test_file", str(tmp_path / "test.tsv"), "--output_dir", str(out), "--max_steps", "3",
                 *COMMON]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test_bleu", "test_chrf", "test_loss"} <= set(metrics)
    generation = json.loads((out / "generation_config.json").read_text())
    # [tgt] starts and stops decoding (the official task); transformers' Trainer adds the tokenizer's </s> as a second
    # stop token (align_special_tokens), as in its mBART: the decoded text is the same, both are special tokens
    assert generation["decoder_start_token_id"] == en and sorted(generation["eos_token_id"]) == [eos, en]
    assert main(["veco", "export", str(out), "--output_dir", str(tmp_path / "bart")]) == 0
    assert json.loads((tmp_path / "bart" / "config.json").read_text())["model_type"] == "bart"


def test_bad_input_gets_one_line_errors(tmp_path, capsys, pretrained_dir):
    (tmp_path / "p.de").write_text("eins\nzwei\ndrei\n")
    (tmp_path / "p.en").write_text("one\ntwo\n")
    message = _error(capsys, ["train", "--task", "veco_pretrain", "--model_name_or_path", "tiny-veco",
                              "--train_file", str(tmp_path / "p"), "--task.x_suffix", ".de", "--task.y_suffix", ".en",
                              "--output_dir", str(tmp_path / "r1"), *COMMON])
    assert "3 lines" in message and "2 lines" in message
    message = _error(capsys, ["veco", "init-nlg", "--model", str(pretrained_dir), "--src", "xx", "--tgt", "en",
                              "--out", str(tmp_path / "n")])
    assert "unknown language code" in message and "xx" in message
    assert "unknown language code" in _error(capsys, ["veco", "prepare-data", "--out", str(tmp_path / "d"),
                                                      "--pairs", "de-xx"])
    # plug-in from a VECO without cross-attention weights: a config without them, and a checkpoint that lacks them
    torch.manual_seed(0)
    from plmkit.veco.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    no_ca = tmp_path / "no_ca"
    VecoForPreTraining(tiny_model_config(tokenizer, cross_attention=False)).save_pretrained(no_ca)
    tokenizer.save_pretrained(no_ca)
    (tmp_path / "cls.jsonl").write_text("".join(json.dumps({"text": a, "pair": b, "label": i % 2}) + "\n"
                                                for i, (a, b) in enumerate(PAIRS)))
    plug_in = ["train", "--task", "veco_classification", "--task.pair_column", "pair", "--train_file",
               str(tmp_path / "cls.jsonl"), "--output_dir", str(tmp_path / "r2"), *COMMON]
    assert "no cross-attention weights" in _error(capsys, [*plug_in, "--model_name_or_path", str(no_ca)])
    config = json.loads((no_ca / "config.json").read_text())
    (no_ca / "config.json").write_text(json.dumps({**config, "cross_attention": True}))
    assert "no cross-attention weights" in _error(capsys, [*plug_in, "--model_name_or_path", str(no_ca)])


def test_plug_in_classification_trains(tmp_path, capsys, pretrained_dir):
    (tmp_path / "cls.jsonl").write_text("".join(json.dumps({"text": a, "pair": b, "label": i % 2}) + "\n"
                                                for i, (a, b) in enumerate(PAIRS)))
    out = tmp_path / "run"
    assert main(["train", "--task", "veco_classification", "--task.pair_column", "pair", "--model_name_or_path",
                 str(pretrained_dir), "--train_file", str(tmp_path / "cls.jsonl"), "--test_file",
                 str(tmp_path / "cls.jsonl"), "--output_dir", str(out), "--max_steps", "2", *COMMON]) == 0
    assert json.loads((out / "config.json").read_text())["plug_in"] is True
    assert "test_accuracy" in json.loads((out / "metrics.json").read_text())
    assert "no plain transformers form" in _error(capsys, ["veco", "export", str(out), "--output_dir",
                                                           str(tmp_path / "plain")])


def test_init_nlg_at_random_for_the_no_pretraining_arm(tmp_path, pretrained_dir):
    from transformers import AutoModelForSeq2SeqLM

    out = tmp_path / "random"
    assert main(["veco", "init-nlg", "--config", "{hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, "
                 "intermediate_size: 64, max_position_embeddings: 130, decoder_layers: 1}", "--tokenizer",
                 str(pretrained_dir), "--src", "de", "--tgt", "en", "--out", str(out)]) == 0
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    tokenizer = VecoTokenizer.from_pretrained(out)
    assert (model.config.num_hidden_layers, model.config.decoder_layers, model.config.keep_decoder_layers) == (2, 1, None)
    assert model.config.decoder_start_token_id == tokenizer.language_id("en") and model.config.vocab_size == len(tokenizer)
    pretrained = VecoForPreTraining.from_pretrained(pretrained_dir)
    assert not torch.allclose(model.model.decoder.layers[0].fc1.weight, pretrained.veco.layers[1].fc1.weight)
