"""The `seq2seq` task: parallel data in its three forms, the errors for bad files and non-seq2seq models, encoding
and label padding, BLEU/chrF against sacreBLEU, and `plmkit train/eval --task seq2seq` on a tiny copy task."""

import json
import random

import pytest
import sacrebleu
import torch
import yaml
from transformers import TrainingArguments

from plmkit.core.cli import main
from plmkit.core.errors import DataError, TaskError
from plmkit.core.models import load_model, load_tokenizer
from plmkit.core.tasks import DataSource, build_task
from plmkit.core.tasks.seq2seq import Seq2SeqTask, read_parallel, score
from plmkit.core.training import Trainer

TINY = ["--model_name_or_path", "tiny-bart", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
        "--config_overrides", "dropout=0"]
_WORDS = "the a cat dog sat ran big red sun sky".split()


def _copy_pairs(n, seed=0):
    """A copy task (target = source) on two-word sentences: learnable by a tiny BART in a few dozen steps."""
    rng = random.Random(seed)
    return [(s, s) for s in (" ".join(rng.sample(_WORDS, 2)) for _ in range(n))]


def _tsv(path, pairs, header=None):
    lines = ([header] if header else []) + [f"{s}\t{t}" for s, t in pairs]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _task(tmp_path=None, options=None, **files):
    return build_task("seq2seq", options or {}, DataSource(**{f"{k}_file": str(v) for k, v in files.items()}))


def _bart():
    return load_model("tiny-bart", kind="seq2seq", dropout=0.0)


def _trainer(tmp_path, model, tok, task, **args):
    targs = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, save_strategy="no",
                              dataloader_pin_memory=False, **args)
    return Trainer(model, targs, task=task, data_collator=task.collator(tok, model), processing_class=tok)


# -- data ---------------------------------------------------------------------------------------------------------
def test_tsv_with_and_without_header_and_jsonl_give_the_same_pairs(tmp_path):
    pairs = [("hello world", "hallo welt"), ('say "hi"', "sag 'hallo'"), ("x", "")]
    plain = _tsv(tmp_path / "plain.tsv", pairs)
    headed = tmp_path / "headed.tsv"
    headed.write_text("id\tde\ten\n" + "".join(f"{i}\t{t}\t{s}\n" for i, (s, t) in enumerate(pairs)))
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"source": s, "target": t, "id": 1}) + "\n" for s, t in pairs) + "\n")
    translation = tmp_path / "translation.jsonl"
    translation.write_text("".join(json.dumps({"translation": {"en": s, "de": t}}) + "\n" for s, t in pairs))
    lang = {"source_column": "en", "target_column": "de"}
    for path, options in ((plain, {}), (headed, lang), (jsonl, {}), (translation, lang)):
        splits = _task(options=options, train=path, validation=path).load()
        assert list(splits) == ["train", "validation"]
        assert list(zip(splits["train"]["source"], splits["train"]["target"], strict=True)) == pairs, path


def test_plain_text_pairs_per_split_through_the_suffix_options(tmp_path):
    (tmp_path / "train.en").write_text("one\ntwo\n\nfour\n")
    (tmp_path / "train.de").write_text("eins\r\nzwei\r\n\r\nvier")  # CRLF, no final newline, an empty pair
    (tmp_path / "dev.en").write_text("five\n")
    (tmp_path / "dev.de").write_text("fünf\n")
    task = _task(options={"source_suffix": ".en", "target_suffix": ".de"}, train=tmp_path / "train",
                 validation=tmp_path / "dev")
    splits = task.load()
    assert splits["train"]["source"] == ["one", "two", "", "four"]
    assert splits["train"]["target"] == ["eins", "zwei", "", "vier"]
    assert splits["validation"]["target"] == ["fünf"]
    assert task.description == f"{tmp_path / 'train'}.en + {tmp_path / 'train'}.de"


def test_parallel_files_with_different_line_counts_are_refused(tmp_path):
    (tmp_path / "a.src").write_text("one\ntwo\nthree\n")
    (tmp_path / "a.tgt").write_text("eins\nzwei\n")
    with pytest.raises(DataError) as err:
        read_parallel(tmp_path / "a.src", tmp_path / "a.tgt")
    assert f"{tmp_path / 'a.src'} has 3 lines, {tmp_path / 'a.tgt'} has 2 lines" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "name, content, options, needle",
    [
        ("t.tsv", "a\tb\nno tab here\n", {}, "t.tsv:2: expected source<TAB>target, found no tab"),
        ("t.tsv", "a\tb\nc\td\te\n", {}, "t.tsv:2: expected source<TAB>target, found 3 tab-separated columns"),
        ("t.tsv", "", {}, "t.tsv is empty"),
        ("t.tsv", "\n  \n", {}, "t.tsv is empty"),
        ("t.tsv", "source\ttarget\n", {}, "t.tsv has a header line but no rows"),
        ("t.tsv", "x\ty\na\tb\n", {"source_column": "en", "target_column": "de"}, "no column(s) ['en', 'de']"),
        ("t.tsv", "en\tde\na\tb\tc\n", {"source_column": "en", "target_column": "de"}, "t.tsv:2: 3 tab-separated"),
        ("t.tsv", b"ok\tgut\nna\xefve\tnaiv\n", {}, "t.tsv:2: not UTF-8 text (byte 0xef at column 3)"),
        ("t.jsonl", '{"source": "a", "target": "b"}\n{"source": "a"\n', {}, "t.jsonl:2: not valid JSON"),
        ("t.jsonl", '{"source": "a", "tgt": "b"}\n', {}, "t.jsonl:1: no text field 'target' (its keys are"),
        ("t.jsonl", '{"source": "a", "target": 3}\n', {}, "t.jsonl:1: no text field 'target' (it is int)"),
        ("t.jsonl", "[1, 2]\n", {}, "t.jsonl:1: expected a JSON object, found list"),
        ("t.csv", "source,target\na,b\n", {}, "reads .tsv (source<TAB>target) or .jsonl"),
    ],
)
def test_bad_files_are_data_errors_naming_file_and_line(tmp_path, name, content, options, needle):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as err:
        _task(options=options, train=path).load()
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_data_sources_the_task_cannot_use(tmp_path):
    with pytest.raises(DataError, match="no data: pass --train_file"):
        _task().load()
    with pytest.raises(DataError, match="--data is for classification"):
        build_task("seq2seq", {}, DataSource(data="rt-polarity")).load()
    with pytest.raises(DataError, match=r"missing\.tsv does not exist"):
        _task(train=tmp_path / "missing.tsv").load()
    with pytest.raises(TaskError, match="source_suffix and target_suffix go together"):
        build_task("seq2seq", {"source_suffix": ".en"})
    with pytest.raises(TaskError, match="bleu_tokenize must be one of"):
        build_task("seq2seq", {"bleu_tokenize": "moses"})
    with pytest.raises(TaskError, match="num_beams must be >= 1"):
        build_task("seq2seq", {"num_beams": 0})


def test_limits_apply(tmp_path):
    path = _tsv(tmp_path / "p.tsv", _copy_pairs(10))
    task = build_task("seq2seq", {}, DataSource(train_file=str(path), validation_file=str(path), max_train_samples=3,
                                                max_eval_samples=2))
    splits = task.load()
    assert (len(splits["train"]), len(splits["validation"])) == (3, 2)


# -- encoding -----------------------------------------------------------------------------------------------------
def test_encoding_truncates_prefixes_and_pads_labels_with_minus_100(tmp_path):
    pairs = [("hello world", "hallo welt"), ("a", "a much longer target sentence")]
    path = _tsv(tmp_path / "p.tsv", pairs)
    task = _task(options={"source_prefix": "en-de: ", "max_target_length": 16}, train=path)
    model, tok = _bart()
    encoded = task.encode(task.load(), tok, max_length=16)["train"]
    assert set(encoded.column_names) == {"input_ids", "attention_mask", "labels", "example_id", "target"}
    assert encoded["example_id"] == [0, 1]
    assert encoded["target"] == ["hallo welt", "a much longer target sentence"]  # the raw references
    first = encoded[0]
    assert len(first["input_ids"]) == 16 and tok.decode(first["input_ids"], skip_special_tokens=True) == "en-de: hello w"
    assert first["labels"] == tok(text_target="hallo welt", max_length=16, truncation=True)["input_ids"]
    assert len(first["labels"]) == 12 and len(encoded[1]["labels"]) == 16

    batch = task.collator(tok, model)([encoded[0], encoded[1]])
    assert "target" not in batch  # text never reaches the model
    assert batch["labels"].shape == (2, 16)
    assert batch["labels"][0].tolist() == first["labels"] + [-100] * 4
    assert batch["input_ids"][1, 10:].tolist() == [tok.pad_token_id] * 6  # "en-de: a" + <s>, </s>
    # decoder inputs: the labels shifted right behind decoder_start_token_id, -100 turned into padding
    start, pad = model.config.decoder_start_token_id, tok.pad_token_id
    assert batch["decoder_input_ids"][0].tolist() == [start, *first["labels"], pad, pad, pad]
    with pytest.raises(DataError, match=r"no column\(s\) \['language'\]"):
        task.encode(task.load(), tok, 10, keep_columns=("language",))


def test_language_codes_go_to_tokenizers_that_take_them(tmp_path):
    path = _tsv(tmp_path / "p.tsv", [("a", "b")])
    task = _task(options={"source_lang": "en_XX"}, train=path)
    with pytest.raises(TaskError, match="source_lang 'en_XX': the tokenizer .* takes no language codes"):
        task.encode(task.load(), load_tokenizer("tiny-bart"), 16)

    model, tok = _bart()
    tok.add_special_tokens({"additional_special_tokens": ["en_XX", "de_DE"]})
    tok.src_lang, tok.tgt_lang = None, None  # stands for mBART's language attributes
    task = _task(options={"source_lang": "en_XX", "target_lang": "de_DE", "num_beams": 3}, train=path)
    task.encode(task.load(), tok, 16)
    assert (tok.src_lang, tok.tgt_lang) == ("en_XX", "de_DE")
    config = task.generation_config(model, tok)
    assert config.forced_bos_token_id == tok.convert_tokens_to_ids("de_DE")
    assert (config.num_beams, config.max_length) == (3, 128)
    bad = _task(options={"target_lang": "xx_YY"}, train=path)
    bad._set_languages(tok)
    with pytest.raises(TaskError, match="target_lang 'xx_YY' is not a token"):
        bad.generation_config(model, tok)


# -- model kind ---------------------------------------------------------------------------------------------------
def test_models_that_are_not_encoder_decoders_are_task_errors():
    task = build_task("seq2seq")
    bert, _ = load_model("tiny-bert", kind="masked-lm")
    with pytest.raises(TaskError) as err:
        task.check_model(bert)
    assert str(err.value) == ("task seq2seq needs an encoder-decoder model (BART, T5, Marian, mBART, ...); bert is an "
                              "encoder (BertForMaskedLM)")
    with pytest.raises(TaskError, match="; tiny-bert is an encoder \\(bert\\)$"):
        task.check_config(bert.config.__class__(), "tiny-bert")
    gpt2, _ = load_model("tiny-gpt2", kind="causal-lm")
    with pytest.raises(TaskError, match="is a decoder-only model \\(GPT2LMHeadModel\\)"):
        task.check_model(gpt2)
    bart, _ = _bart()
    task.check_model(bart)
    task.check_config(bart.config, "tiny-bart")


def test_cli_names_the_model_kind_mismatch_in_one_line(tmp_path, capsys):
    path = _tsv(tmp_path / "p.tsv", _copy_pairs(4))
    argv = ["train", "--task", "seq2seq", "--train_file", str(path), *TINY, "--model_name_or_path", "tiny-bert",
            "--output_dir", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "task seq2seq needs an encoder-decoder model" in capsys.readouterr().err


# -- scoring ------------------------------------------------------------------------------------------------------
def test_bleu_and_chrf_are_sacrebleu_on_the_generated_strings(tmp_path):
    pairs = _copy_pairs(7, seed=1) + [("big red sky", "the sun sat")]
    path = _tsv(tmp_path / "p.tsv", pairs)
    task = _task(options={"num_beams": 2, "max_target_length": 12}, train=path, validation=path)
    model, tok = _bart()
    encoded = task.encode(task.load(), tok, 32)
    trainer = _trainer(tmp_path, model, tok, task, per_device_eval_batch_size=3)
    metrics = task.evaluate(trainer, encoded["validation"], "eval")

    hypotheses = task.generate(model, tok, encoded["validation"], batch_size=3)
    references = [t for _, t in pairs]
    assert metrics["eval_bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    assert metrics["eval_chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score)
    assert metrics["eval_loss"] > 0
    # batched, length-sorted generation gives each row what generating it alone gives
    config = task.generation_config(model, tok)
    for row, hypothesis in zip(encoded["validation"], hypotheses, strict=True):
        alone = model.generate(torch.tensor([row["input_ids"]]), generation_config=config)
        assert tok.decode(alone[0], skip_special_tokens=True).strip() == hypothesis
    assert score(["the cat sat on the mat"], ["the cat sat on the mat"])["eval_bleu"] == pytest.approx(100.0)
    assert score(["猫が座った"], ["猫が座った"], "test", "zh")["test_chrf"] == pytest.approx(100.0)


def test_generate_restores_the_training_mode(tmp_path):
    path = _tsv(tmp_path / "p.tsv", _copy_pairs(2))
    task = _task(options={"num_beams": 1, "max_target_length": 4}, train=path)
    model, tok = _bart()
    encoded = task.encode(task.load(), tok, 16)["train"]
    model.train()
    assert len(task.generate(model, tok, encoded)) == 2 and model.training
    model.eval()
    task.generate(model, tok, encoded)
    assert not model.training


def test_label_smoothing_from_training_arguments_reaches_the_loss(tmp_path):
    from transformers.trainer_pt_utils import LabelSmoother

    path = _tsv(tmp_path / "p.tsv", _copy_pairs(4))
    task = _task(train=path)
    model, tok = _bart()
    encoded = task.encode(task.load(), tok, 16)["train"]
    trainer = _trainer(tmp_path, model, tok, task, label_smoothing_factor=0.1)
    batch = trainer._prepare_inputs(trainer.data_collator([encoded[i] for i in range(4)]))
    model.train()
    loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
    expected = LabelSmoother(epsilon=0.1)(outputs, batch["labels"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() != pytest.approx(model(**{k: v for k, v in batch.items() if k != "example_id"}).loss.item())


# -- the command line ---------------------------------------------------------------------------------------------
STEPS = ["--max_steps", "120", "--learning_rate", "3e-3", "--per_device_train_batch_size", "16",
         "--per_device_eval_batch_size", "16", "--warmup_steps", "0", "--seed", "0"]


def test_cli_trains_a_copy_task_and_reports_bleu(tmp_path):
    train = _tsv(tmp_path / "pairs.tsv", _copy_pairs(128))
    dev = _tsv(tmp_path / "dev.tsv", _copy_pairs(16, seed=1), header="source\ttarget")
    run = tmp_path / "run"
    argv = ["train", "--task", "seq2seq", "--train_file", str(train), "--validation_file", str(dev), *TINY, *STEPS,
            "--task.num_beams", "1", "--task.max_target_length", "32", "--output_dir", str(run)]
    assert main(argv) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"eval_loss", "eval_bleu", "eval_chrf"} <= set(metrics)
    assert 0.0 <= metrics["eval_bleu"] <= 100.0 and 0.0 <= metrics["eval_chrf"] <= 100.0
    assert metrics["eval_loss"] < 3.0  # a random model starts at about ln(261) = 5.6


def test_the_final_evaluation_generates_once_per_split(tmp_path, monkeypatch):
    """A task's own evaluate (generation + BLEU here) runs once per split at the end of a run and in `plmkit eval`
    (it ran twice: the run called it, and its trainer.evaluate call entered it again)."""
    calls = []
    original = Seq2SeqTask.evaluate

    def counted(self, trainer, dataset, prefix):
        calls.append(prefix)
        return original(self, trainer, dataset, prefix)

    monkeypatch.setattr(Seq2SeqTask, "evaluate", counted)
    train = _tsv(tmp_path / "pairs.tsv", _copy_pairs(32))
    dev = _tsv(tmp_path / "dev.tsv", _copy_pairs(8, seed=1), header="source\ttarget")
    test = _tsv(tmp_path / "test.tsv", _copy_pairs(8, seed=2), header="source\ttarget")
    run = tmp_path / "run"
    argv = ["train", "--task", "seq2seq", "--train_file", str(train), "--validation_file", str(dev), "--test_file",
            str(test), *TINY, "--max_steps", "2", "--task.num_beams", "1", "--task.max_target_length", "8",
            "--output_dir", str(run)]
    assert main(argv) == 0
    assert calls == ["eval", "test"]
    assert main(["eval", str(run), "--split", "test"]) == 0
    assert calls == ["eval", "test", "test"]


def test_cli_refuses_misaligned_plain_text_pairs_in_one_line(tmp_path, capsys):
    (tmp_path / "train.en").write_text("a\nb\nc\n")
    (tmp_path / "train.de").write_text("a\nb\n")
    argv = ["train", "--task", "seq2seq", "--train_file", str(tmp_path / "train"), "--task.source_suffix", ".en",
            "--task.target_suffix", ".de", *TINY, "--output_dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"plmkit: error: {tmp_path / 'train.en'} has 3 lines, {tmp_path / 'train.de'} has 2 lines; "
                       "parallel files must be aligned line by line")


@pytest.fixture(scope="module")
def yaml_run(tmp_path_factory):
    """A run trained from a YAML config with a `task:` section (tsv training pairs, a jsonl dev set)."""
    folder = tmp_path_factory.mktemp("seq2seq_yaml")
    _tsv(folder / "train.tsv", _copy_pairs(128))
    dev = _copy_pairs(16, seed=1)
    (folder / "dev.jsonl").write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in dev))
    config = {
        "model_name_or_path": "tiny-bart", "config_overrides": "dropout=0", "train_file": str(folder / "train.tsv"),
        "validation_file": str(folder / "dev.jsonl"), "max_steps": 120, "learning_rate": 3e-3,
        "per_device_train_batch_size": 16, "warmup_steps": 0, "report_to": "none", "save_strategy": "no",
        "disable_tqdm": True, "output_dir": str(folder / "run"),
        "task": {"name": "seq2seq", "num_beams": 2},
    }
    (folder / "exp.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(folder / "exp.yaml"), "--task.max_target_length", "32"]) == 0
    return folder / "run"


def test_cli_trains_from_a_yaml_task_section(yaml_run):
    saved = yaml.safe_load((yaml_run / "plmkit_config.yaml").read_text())
    assert saved["task"] == {"name": "seq2seq", "num_beams": 2, "max_target_length": 32}
    metrics = json.loads((yaml_run / "metrics.json").read_text())
    assert {"eval_loss", "eval_bleu", "eval_chrf"} <= set(metrics) and metrics["eval_loss"] < 3.0


def test_plmkit_eval_reloads_the_run_and_reproduces_its_scores(yaml_run, capsys):
    capsys.readouterr()
    assert main(["eval", str(yaml_run), "--split", "validation"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    saved = json.loads((yaml_run / "metrics.json").read_text())
    for key in ("eval_loss", "eval_bleu", "eval_chrf"):
        assert metrics[key] == pytest.approx(saved[key], abs=1e-4), key


def test_the_task_is_registered():
    from plmkit.core.tasks import get_task

    assert get_task("seq2seq") is Seq2SeqTask
    assert Seq2SeqTask.model_kind == "seq2seq" and Seq2SeqTask.main_metric == "bleu"
