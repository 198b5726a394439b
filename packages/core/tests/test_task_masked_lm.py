"""The `masked_lm` task: corpora, masking, the masked-only loss, split-level metrics, packing, errors, the CLI."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F
import transformers
import yaml
from transformers import AutoModelForMaskedLM, BartConfig, BertConfig, GPT2Config, TrainingArguments

from plmkit.core.cli import main
from plmkit.core.data import BUILTIN, load_builtin
from plmkit.core.errors import DataError, TaskError
from plmkit.core.models import ALIASES, load_model
from plmkit.core.run import load_run
from plmkit.core.tasks import DataSource, build_task, get_task
from plmkit.core.tasks.masked_lm import BUILTIN_TEXT, MaskedLMCollator, MaskedLMTask, masked_lm_forward
from plmkit.core.testing import tiny_model
from plmkit.core.training import Trainer

# Words the tiny tokenizers know whole, and words they split into many pieces (for whole-word masking).
_WORDS = "the a movie film story is was it this that and of good bad great fun dull".split()
_LONG = "xylophone quizzically zebra marvellous jumpy vexing".split()
TINY_RUN = ["--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
            "--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS + _LONG) for _ in range(rng.randint(3, 12))) for _ in range(n)]


def _corpus(tmp_path, n: int = 200, name: str = "corpus.txt", seed: int = 0):
    path = tmp_path / name
    path.write_text("\n".join(_lines(n, seed)) + "\n")
    return path


def _task(path=None, data=None, **options) -> MaskedLMTask:
    return build_task("masked_lm", options, DataSource(data=data, train_file=str(path) if path else None))


def _model(kind: str):
    return tiny_model(kind, head="masked-lm")


# ---------------------------------------------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_masking_shares_and_labels_only_at_masked_positions(tmp_path, kind):
    _, tok = _model(kind)
    task = _task(_corpus(tmp_path, 600))
    train = task.encode(task.load(), tok, 64)["train"]
    collate = MaskedLMCollator(tok, 0.15, generator=torch.Generator().manual_seed(0))
    features = [train[i] for i in range(len(train))]
    original = collate._pad([f["input_ids"] for f in features], tok.pad_token_id)
    batch = collate(features)
    chosen = batch["labels"].ne(-100)
    maskable = batch["attention_mask"].bool() & ~torch.isin(original, torch.tensor(tok.all_special_ids))

    # labels exactly at the chosen positions, holding the original tokens; specials and padding never chosen
    assert torch.equal(batch["labels"][chosen], original[chosen])
    assert not (chosen & ~maskable).any()
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])
    assert abs(chosen.sum().item() / maskable.sum().item() - 0.15) < 0.015
    # of the chosen: 80% [MASK], 10% a random token, 10% unchanged (a random draw may hit the original token)
    now = batch["input_ids"][chosen]
    n = chosen.sum().item()
    assert abs(now.eq(tok.mask_token_id).sum().item() / n - 0.8) < 0.04
    assert abs(now.eq(original[chosen]).sum().item() / n - 0.1) < 0.04
    assert abs((now.ne(tok.mask_token_id) & now.ne(original[chosen])).sum().item() / n - 0.1) < 0.04


def test_training_masks_are_fresh_every_batch_and_evaluation_masks_are_fixed(tmp_path):
    _, tok = _model("bert")
    path = _corpus(tmp_path, 400)
    enc = _task(path).encode(_task(path).load(), tok, 64)
    collate = _task(path).collator(tok)
    features = [enc["train"][i] for i in range(32)]
    assert not torch.equal(collate(features)["labels"], collate(features)["labels"])

    # Validation masks are drawn once per example (seed, example_id): the same in a second encoding, whatever
    # the batching, and different under another seed.
    again = _task(path).encode(_task(path).load(), tok, 64)["validation"]
    assert list(enc["validation"]["labels"]) == list(again["labels"])
    assert list(enc["validation"]["input_ids"]) == list(again["input_ids"])
    val = [enc["validation"][i] for i in range(len(enc["validation"]))]
    whole = collate(val)["labels"]
    for i, f in enumerate(val):
        alone = collate([f])["labels"][0]
        assert torch.equal(whole[i, : len(alone)], alone)
    other = _task(path, seed=1).encode(_task(path).load(), tok, 64)["validation"]
    assert list(other["labels"]) != list(enc["validation"]["labels"])
    assert all(any(x != -100 for x in row) for row in list(enc["validation"]["labels"])[:5])


@pytest.mark.parametrize("packing", ["line", "blocks"])
def test_whole_word_masking_masks_every_piece_of_a_word_or_none(tmp_path, packing):
    _, tok = _model("bert")
    task = _task(_corpus(tmp_path, 300), whole_word=True, packing=packing, mlm_probability=0.3)
    enc = task.encode(task.load(), tok, 48)
    train = enc["train"]
    assert "word_ids" in train.column_names
    collate = task.collator(tok)
    features = [train[i] for i in range(len(train))]
    # the Trainer keeps word_ids for the collator (a task batch column) and never gives it to the model
    assert "word_ids" in task.batch_columns
    for batch in (collate(features),):
        words = collate._pad([f["word_ids"] for f in features], -1)
        chosen = batch["labels"].ne(-100)
        multi = 0
        for b in range(words.shape[0]):
            for w in words[b].unique().tolist():
                if w < 0:
                    continue
                at = chosen[b][words[b] == w]
                assert at.all() or not at.any(), (b, w, at)
                multi += int(at.all() and at.numel() > 1)
        assert multi > 10  # multi-piece words were masked whole
    if packing == "line":  # evaluation masks are whole-word too
        texts = list(task.load()["validation"]["text"])
        for text, labels in zip(texts, list(enc["validation"]["labels"]), strict=True):
            words = torch.tensor([-1 if w is None else w for w in tok(text, truncation=True, max_length=48).word_ids()])
            chosen = torch.tensor(labels).ne(-100)
            for w in words[words >= 0].unique():
                assert chosen[words == w].all() or not chosen[words == w].any()


def test_whole_word_masking_chooses_the_probability_share_of_words(tmp_path):
    _, tok = _model("roberta")
    task = _task(_corpus(tmp_path, 600), whole_word=True)
    train = task.encode(task.load(), tok, 64)["train"]
    collate = MaskedLMCollator(tok, 0.15, whole_word=True, generator=torch.Generator().manual_seed(1))
    features = [train[i] for i in range(len(train))]
    batch = collate(features)
    words = collate._pad([f["word_ids"] for f in features], -1)
    chosen_words = total = 0
    for b in range(words.shape[0]):
        for w in words[b][words[b] >= 0].unique().tolist():
            total += 1
            chosen_words += int(batch["labels"][b][words[b] == w].ne(-100).any())
    assert abs(chosen_words / total - 0.15) < 0.02


# ---------------------------------------------------------------------------------------------------------------
# Loss and metrics
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bert", "roberta", "xlmr"])
def test_masked_only_loss_and_gradients_equal_transformers_full_loss(tmp_path, kind):
    model, tok = _model(kind)
    task = _task(_corpus(tmp_path, 100))
    train = task.encode(task.load(), tok, 64)["train"]
    torch.manual_seed(3)
    batch = task.collator(tok)([train[i] for i in range(12)])
    batch.pop("example_id")
    model.train()

    loss, out = task.compute_loss(model, batch)
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    full = model(**batch)  # transformers: logits at every position [B, T, V], loss over labels != -100
    full_grads = torch.autograd.grad(full.loss, list(model.parameters()), allow_unused=True)

    assert loss.item() == pytest.approx(full.loss.item(), abs=1e-5)
    for g, h in zip(grads, full_grads, strict=True):
        assert (g is None) == (h is None)
        if g is not None:
            torch.testing.assert_close(g, h, atol=1e-5, rtol=1e-4)
    masked = batch["labels"].ne(-100)
    assert out.masked_logits.shape == (masked.sum().item(), model.config.vocab_size)
    torch.testing.assert_close(out.masked_logits, full.logits[masked], atol=1e-5, rtol=1e-5)
    # per-example statistics: summed loss, masked tokens, correct predictions
    per_token = F.cross_entropy(full.logits[masked].float(), batch["labels"][masked], reduction="none")
    rows = masked.nonzero(as_tuple=True)[0]
    expect = torch.zeros(batch["labels"].shape[0]).index_add_(0, rows, per_token.detach())
    torch.testing.assert_close(out.stats[:, 0], expect, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.stats[:, 1], masked.sum(1).float())


_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
_NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
OTHER_HEADS = {
    "albert": lambda: transformers.AlbertConfig(vocab_size=100, embedding_size=16, **_TINY, **_NO_DROPOUT),
    "distilbert": lambda: transformers.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                                        dropout=0.0, attention_dropout=0.0),
    "electra": lambda: transformers.ElectraConfig(vocab_size=100, embedding_size=16, **_TINY, **_NO_DROPOUT),
    "deberta-v2": lambda: transformers.DebertaV2Config(vocab_size=100, **_TINY, **_NO_DROPOUT),
    "mpnet": lambda: transformers.MPNetConfig(vocab_size=100, **_TINY, **_NO_DROPOUT),
    "modernbert": lambda: transformers.ModernBertConfig(vocab_size=100, pad_token_id=0, bos_token_id=1,
                                                        eos_token_id=2, cls_token_id=1, sep_token_id=2, **_TINY),
}


@pytest.mark.parametrize("arch", sorted(OTHER_HEADS))
def test_other_masked_lm_heads_are_found_and_give_transformers_loss(arch):
    model = AutoModelForMaskedLM.from_config(OTHER_HEADS[arch]()).train()
    task = get_task("masked_lm")()
    task.check_model(model)
    ids = torch.randint(5, 100, (3, 12), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(ids)
    attention_mask[2, 8:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 1], labels[1, 5], labels[2, 3] = 7, 3, 9, 11
    batch = {"input_ids": ids, "attention_mask": attention_mask, "labels": labels}
    loss, _ = task.compute_loss(model, batch)
    assert loss.item() == pytest.approx(model(**batch).loss.item(), abs=1e-5)


def test_a_batch_without_masked_tokens_has_a_zero_loss_that_still_backpropagates():
    model, tok = _model("bert")
    batch = MaskedLMCollator(tok)([{"input_ids": [2, 10, 11, 3], "labels": [-100] * 4}])
    loss, out = get_task("masked_lm")().compute_loss(model, batch)
    assert loss.item() == 0.0 and loss.requires_grad
    assert out.stats.sum().item() == 0.0


def _direct_metrics(model, batch_list):
    loss_sum, tokens, correct = 0.0, 0, 0
    with torch.no_grad():
        for batch in batch_list:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            masked = batch["labels"].ne(-100)
            loss_sum += F.cross_entropy(logits[masked], batch["labels"][masked], reduction="sum").item()
            tokens += masked.sum().item()
            correct += logits[masked].argmax(-1).eq(batch["labels"][masked]).sum().item()
    return loss_sum / tokens, correct / tokens, tokens


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_eval_metrics_over_a_split_equal_a_direct_computation(tmp_path, kind):
    model, tok = _model(kind)
    task = _task(_corpus(tmp_path, 400))
    enc = task.encode(task.load(), tok, 64)
    val = enc["validation"]
    assert len(val) == 20  # 5% of 400 lines
    args = TrainingArguments(str(tmp_path / "out"), per_device_eval_batch_size=3, report_to=[], use_cpu=True,
                             dataloader_pin_memory=False, disable_tqdm=True)
    trainer = Trainer(model.eval(), args, task=task, data_collator=task.collator(tok, model),
                      compute_metrics=task.compute_metrics())
    metrics = task.evaluate(trainer, val, "eval")

    collate = task.collator(tok)
    loss, accuracy, tokens = _direct_metrics(model, [collate([val[i]]) for i in range(len(val))])
    assert metrics["eval_masked_tokens"] == tokens
    assert metrics["eval_masked_loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert metrics["eval_masked_accuracy"] == pytest.approx(accuracy, abs=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------------------------------------------
def test_blocks_concatenate_the_tokenized_lines_like_run_mlm(tmp_path):
    _, tok = _model("bert")
    path = _corpus(tmp_path, 300)
    task = _task(path, packing="blocks")
    splits = task.load()
    train = task.encode(splits, tok, 32)["train"]
    lines = list(splits["train"]["text"])
    ids = [t for line in tok(lines)["input_ids"] for t in line]  # each line with its [CLS] ... [SEP]
    assert [t for block in list(train["input_ids"]) for t in block] == ids
    assert all(len(block) == 32 for block in list(train["input_ids"])[:-1])
    assert 0 < len(list(train["input_ids"])[-1]) <= 32
    assert list(train["example_id"]) == list(range(len(train)))

    lines_task = _task(path)
    by_line = lines_task.encode(lines_task.load(), tok, 8)["train"]
    assert len(by_line) == len(lines)
    assert all(len(x) <= 8 and x[-1] == tok.sep_token_id for x in list(by_line["input_ids"]))


def test_blocks_are_grouped_per_1000_lines(tmp_path):
    _, tok = _model("bert")
    task = _task(_corpus(tmp_path, 1100, seed=2), packing="blocks")
    splits = task.load()
    train = task.encode(splits, tok, 64)["train"]
    lines = list(splits["train"]["text"])
    groups = [lines[:1000], lines[1000:]]
    expect = []
    for group in groups:
        ids = [t for line in tok(group)["input_ids"] for t in line]
        expect += [ids[i : i + 64] for i in range(0, len(ids), 64)]
    assert list(train["input_ids"]) == expect


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------
def test_text_files_skip_blank_lines_and_hold_out_a_fixed_five_percent(tmp_path):
    lines = _lines(300)
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(lines) + "\n  \n")
    splits = _task(path).load()
    assert len(splits["validation"]) == 15 and len(splits["train"]) == 285
    assert sorted(list(splits["train"]["text"]) + list(splits["validation"]["text"])) == sorted(lines)
    # file order kept; the same lines held out every time
    kept = set(splits["train"]["text"])
    assert list(splits["train"]["text"]) == [t for t in lines if t in kept]
    assert list(_task(path).load()["validation"]["text"]) == list(splits["validation"]["text"])


def test_a_validation_file_replaces_the_hold_out_and_limits_count_lines(tmp_path):
    train, val = _corpus(tmp_path, 50, "a.txt"), _corpus(tmp_path, 30, "b.txt", seed=1)
    source = DataSource(train_file=str(train), validation_file=str(val), max_train_samples=20, max_eval_samples=7)
    splits = build_task("masked_lm", {}, source).load()
    assert len(splits["train"]) == 20 and len(splits["validation"]) == 7
    assert list(splits["validation"]["text"]) == _lines(30, seed=1)[:7]


def test_jsonl_reads_the_text_field_or_the_first_text_column(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"text": t, "body": t.upper(), "id": i} for i, t in enumerate(_lines(40))]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    splits = _task(path).load()
    assert sorted(list(splits["train"]["text"]) + list(splits["validation"]["text"])) == sorted(r["text"] for r in rows)
    source = DataSource(train_file=str(path), text_columns=("body", "text"))
    splits = build_task("masked_lm", {}, source).load()
    assert all(t == t.upper() for t in list(splits["train"]["text"]))
    with pytest.raises(DataError, match=r"c.jsonl:1: no 'title' field .*'body', 'id', 'text'"):
        build_task("masked_lm", {}, DataSource(train_file=str(path), text_columns=("title",))).load()


def test_builtin_corpora_are_the_datasets_texts():
    splits = _task(data="rt-polarity").load()
    builtin = load_builtin("rt-polarity").splits
    assert list(splits["train"]["text"]) == list(builtin["train"]["text"])
    assert list(splits["validation"]["text"]) == list(builtin["validation"]["text"])
    assert splits["train"].column_names == ["text"]

    every = _task(data=BUILTIN_TEXT).load()
    train = [t for name in BUILTIN for t in load_builtin(name).splits["train"]["text"]]
    assert list(every["train"]["text"]) == train
    assert not set(every["validation"]["text"]) & set(train)
    assert len(every["validation"]) > len(splits["validation"])


def test_corpora_joined_with_plus_are_concatenated_split_by_split_and_no_eval_line_is_trained_on():
    rt, trec = (load_builtin(name).splits for name in ("rt-polarity", "trec"))
    both = _task(data="rt-polarity+trec").load()
    assert list(both["train"]["text"]) == list(rt["train"]["text"]) + list(trec["train"]["text"])
    assert list(both["test"]["text"])[: len(rt["test"])] == list(rt["test"]["text"])
    train = set(both["train"]["text"])
    assert not train & set(both["validation"]["text"]) and not train & set(both["test"]["text"])
    with pytest.raises(DataError, match=r"names a corpus twice \(builtin-text already holds every builtin dataset\)"):
        _task(data="builtin-text+sms-spam").load()
    with pytest.raises(DataError, match=r"unknown corpus 'wiki'.*or several joined with '\+'"):
        _task(data="trec+wiki").load()


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------
def test_an_empty_corpus_file_is_a_data_error_naming_it(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n   \n\n")
    with pytest.raises(DataError, match=r"empty\.txt is empty: it has no non-blank line"):
        _task(path).load()
    (tmp_path / "empty.jsonl").write_text('{"text": "  "}\n')
    with pytest.raises(DataError, match=r"empty\.jsonl is empty: it has no non-blank 'text' value"):
        _task(tmp_path / "empty.jsonl").load()


def test_a_non_utf8_corpus_file_is_a_data_error_with_the_line_and_column_of_the_first_bad_byte(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("a good line\nun film très drôle\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt:2: not UTF-8 text \(byte 0xe8 at column 11\)"):
        _task(path).load()


def test_missing_files_and_unknown_corpora_are_data_errors(tmp_path):
    with pytest.raises(DataError, match=r"train file .*nope\.txt does not exist"):
        _task(tmp_path / "nope.txt").load()
    source = DataSource(train_file=str(_corpus(tmp_path)), validation_file=str(tmp_path / "dev.txt"))
    with pytest.raises(DataError, match=r"validation file .*dev\.txt does not exist"):
        build_task("masked_lm", {}, source).load()
    (tmp_path / "c.csv").write_text("text\nx\n")
    with pytest.raises(DataError, match=r"unsupported file type '.csv'"):
        _task(tmp_path / "c.csv").load()
    with pytest.raises(DataError, match=r"unknown corpus 'wiki'.*rt-polarity.*builtin-text"):
        _task(data="wiki").load()
    with pytest.raises(DataError, match="no data"):
        _task().load()


def test_bad_options_are_task_errors():
    with pytest.raises(TaskError, match="packing must be one of"):
        build_task("masked_lm", {"packing": "documents"})
    with pytest.raises(TaskError, match=r"mlm_probability must be in \(0, 1\]"):
        build_task("masked_lm", {"mlm_probability": 0.0})


def test_an_encoder_decoder_model_is_refused():
    # AutoModelForMaskedLM maps BART to BartForConditionalGeneration: a seq2seq model.
    config = BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32)
    model = AutoModelForMaskedLM.from_config(config)
    with pytest.raises(TaskError, match=r"BartForConditionalGeneration is an encoder-decoder \(seq2seq\) model"):
        get_task("masked_lm")().check_model(model)


def test_a_model_without_a_masked_lm_head_is_refused():
    model, _ = tiny_model("bert")  # a sequence classifier
    with pytest.raises(TaskError, match="BertForSequenceClassification has none"):
        get_task("masked_lm")().check_model(model)
    model, _ = _model("roberta")
    get_task("masked_lm")().check_model(model)  # accepted


def test_a_head_that_is_not_position_wise_is_refused():
    model, tok = _model("bert")
    inner = model.cls

    class Pooled(torch.nn.Module):  # mixes positions: pools before the vocabulary projection
        def __init__(self):
            super().__init__()
            self.inner, self.predictions = inner, inner.predictions

        def forward(self, hidden):
            return self.inner(hidden.mean(1, keepdim=True))

    model.cls = Pooled()
    with pytest.raises(TaskError, match="does not act on each position on its own"):
        get_task("masked_lm")().check_model(model)
    batch = MaskedLMCollator(tok)([{"input_ids": [2, 10, 11, 12, 3], "labels": [-100, 10, 11, -100, -100]}])
    with pytest.raises(TaskError):
        masked_lm_forward(model, batch)


# ---------------------------------------------------------------------------------------------------------------
# Through the plmkit command
# ---------------------------------------------------------------------------------------------------------------
def test_plmkit_train_task_masked_lm_from_flags(tmp_path):
    corpus = _corpus(tmp_path, 200)
    out = tmp_path / "run"
    argv = ["train", "--task", "masked_lm", "--train_file", str(corpus), "--model_name_or_path", "tiny-bert",
            "--max_steps", "6", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--max_length", "32",
            "--task.whole_word", "true", "--output_dir", str(out), *TINY_RUN]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"eval_masked_loss", "eval_masked_accuracy", "eval_perplexity", "eval_masked_tokens"} <= set(metrics)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_masked_loss"]))
    saved = yaml.safe_load((out / "plmkit_config.yaml").read_text())
    assert saved["task"] == {"name": "masked_lm", "whole_word": True}
    # the saved model is a plain transformers masked-LM model
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]


def test_plmkit_train_task_masked_lm_from_a_yaml_config(tmp_path):
    corpus = _corpus(tmp_path, 200)
    config = tmp_path / "mlm.yaml"
    config.write_text(yaml.safe_dump({
        "model_name_or_path": "tiny-roberta", "train_file": str(corpus), "max_length": 32, "max_steps": 4,
        "per_device_train_batch_size": 8, "output_dir": str(tmp_path / "run"),
        "task": {"name": "masked_lm", "packing": "blocks", "mlm_probability": 0.2},
    }))
    assert main(["train", str(config), *TINY_RUN]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["eval_masked_tokens"] > 0 and math.isfinite(metrics["eval_masked_loss"])
    saved = yaml.safe_load((tmp_path / "run" / "plmkit_config.yaml").read_text())
    assert saved["task"]["name"] == "masked_lm" and saved["task"]["packing"] == "blocks"


def test_plmkit_eval_and_export_of_a_masked_lm_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--task", "masked_lm", "--train_file", str(_corpus(tmp_path)), "--model_name_or_path",
            "tiny-bert", "--max_steps", "2", "--output_dir", str(out), *TINY_RUN]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--split", "validation"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "metrics.json").read_text())
    assert printed["eval_masked_loss"] == pytest.approx(saved["eval_masked_loss"], abs=1e-6)
    assert printed["eval_masked_tokens"] == saved["eval_masked_tokens"]

    # the export is a plain transformers masked-LM model (decoder tied to the embeddings) with the same outputs
    assert main(["export", str(out), "--output_dir", str(tmp_path / "exported")]) == 0
    plain = AutoModelForMaskedLM.from_pretrained(tmp_path / "exported").eval()
    model, tok, _, _ = load_run(out)
    batch = tok(["the movie was fun", "a dull story"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, model(**batch).logits, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("content", "needles"), [
    (b"\n\n", ["empty.txt is empty"]),
    (b"fine\n\xff\xfe broken\n", ["empty.txt:2: not UTF-8 text", "byte 0xff at column 1"]),
])
def test_plmkit_train_reports_bad_corpus_files_in_one_line(tmp_path, capsys, content, needles):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    argv = ["train", "--task", "masked_lm", "--train_file", str(path), "--model_name_or_path", "tiny-bert",
            "--output_dir", str(tmp_path / "run"), *TINY_RUN]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("plmkit: error:") == 1, err
    for needle in needles:
        assert needle in err, err


def test_plmkit_train_refuses_an_encoder_decoder_model_before_building_it(tmp_path, capsys):
    if "tiny-bart" not in ALIASES:
        pytest.skip("no tiny encoder-decoder alias")
    argv = ["train", "--task", "masked_lm", "--train_file", str(_corpus(tmp_path)), "--model_name_or_path",
            "tiny-bart", "--output_dir", str(tmp_path / "run"), *TINY_RUN[:-2]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "plmkit: error: task masked_lm needs an encoder with a masked-LM head; tiny-bart (bart) is an " \
           "encoder-decoder (seq2seq) model: use --task seq2seq" in err, err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_check_config_refuses_decoders_and_models_without_a_masked_lm_class():
    task = get_task("masked_lm")()
    with pytest.raises(TaskError, match=r"gpt2 \(gpt2\) has no masked-LM model in transformers"):
        task.check_config(GPT2Config(), "gpt2")
    with pytest.raises(TaskError, match="configured as a decoder"):
        task.check_config(BertConfig(is_decoder=True), "bert-decoder")
    task.check_config(BertConfig(), "bert")


@pytest.mark.slow
def test_minilm_masked_lm_training_lowers_the_held_out_masked_loss(tmp_path):
    corpus = tmp_path / "rt.txt"
    corpus.write_text("\n".join(list(load_builtin("rt-polarity").splits["train"]["text"])[:1200]) + "\n")
    flags = ["--max_length", "48", "--max_eval_samples", "60"]
    out = tmp_path / "run"
    argv = ["train", "--task", "masked_lm", "--train_file", str(corpus), "--model_name_or_path", "minilm",
            "--max_steps", "24", "--per_device_train_batch_size", "16", "--learning_rate", "2e-4",
            "--warmup_steps", "5", "--per_device_eval_batch_size", "32", "--output_dir", str(out), "--seed", "42",
            "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", *flags]

    # Before: the untrained model (MiniLM's encoder, a fresh MLM transform, the decoder tied to its embeddings) on
    # the same held-out lines with the same fixed masks the run evaluates after training.
    task = build_task("masked_lm", {}, DataSource(train_file=str(corpus), max_eval_samples=60))
    model, tok = load_model("minilm", kind="masked-lm", seed=42)
    task.check_model(model)
    val = task.encode(task.load(), tok, 48)["validation"]
    args = TrainingArguments(str(tmp_path / "before"), per_device_eval_batch_size=32, report_to=[], use_cpu=True,
                             dataloader_pin_memory=False, disable_tqdm=True)
    trainer = Trainer(model, args, task=task, data_collator=task.collator(tok), compute_metrics=task.compute_metrics())
    before = task.evaluate(trainer, val, "eval")

    assert main(argv) == 0
    after = json.loads((out / "metrics.json").read_text())
    assert after["eval_masked_tokens"] == before["eval_masked_tokens"]  # the same masked tokens are scored
    assert after["eval_masked_loss"] < before["eval_masked_loss"] - 0.5, (before, after)
    assert after["eval_masked_accuracy"] > before["eval_masked_accuracy"]
