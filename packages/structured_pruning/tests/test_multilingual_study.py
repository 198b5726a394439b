"""benchmarks/multilingual.py, the multilingual study, without its real budget: the data it draws (the same verses
in every language), its job list, its option checks, and (slow) one run of each kind on a tiny XLM-R."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plmkit.core.testing import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "multilingual.py"
LANGUAGES = ("en", "de", "fr")
GROUPS = ("law", "history", "poetry")


def _study():
    return load_script(SCRIPT)


@pytest.fixture
def bible(tmp_path):
    """A made-up `plmkit veco prepare-data` folder: verse-aligned classify files and translation test pairs."""
    data = tmp_path / "data"
    (data / "classify").mkdir(parents=True)
    for split, n in (("train", 40), ("test", 20)):
        for lang in LANGUAGES:
            rows = [{"text": f"{lang} {split} verse {i} {GROUPS[i % 3]}", "label": GROUPS[i % 3], "language": lang}
                    for i in range(n)]
            (data / "classify" / f"{split}.{lang}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for pair in ("de-en", "fr-en"):
        (data / "mt" / pair).mkdir(parents=True)
        src = pair.split("-")[0]
        lines = ["source\ttarget", *(f"{src} verse {i}\ten verse {i}" for i in range(20))]
        (data / "mt" / pair / "test.tsv").write_text("\n".join(lines) + "\n")
    return data


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_the_study_trains_and_tests_on_the_same_verses_in_every_language(bible, tmp_path):
    files = _study().write_data(bible, tmp_path / "work", n_train=10, n_test=8)
    train, english = _rows(files["train"]), _rows(files["train_en"])
    assert len(train) == 30 and len(english) == 10
    # three rows a verse (en, de, fr), the English ones being the English-only file
    assert [r["language"] for r in train] == list(LANGUAGES) * 10
    assert [r for r in train if r["language"] == "en"] == english
    verses = [r["text"].split()[-2] for r in english]
    for lang in ("de", "fr"):
        assert [r["text"].split()[-2] for r in train if r["language"] == lang] == verses
    tests = {lang: _rows(files[f"test_{lang}"]) for lang in LANGUAGES}
    assert {len(rows) for rows in tests.values()} == {8}
    assert [r["text"].split()[-2] for r in tests["de"]] == [r["text"].split()[-2] for r in tests["en"]]
    # drawn once: a second call keeps the files
    assert _study().write_data(bible, tmp_path / "work", n_train=10, n_test=8) == files
    # tested on other verses of the training books instead of the held-out books
    same_books = _study().write_data(bible, tmp_path / "work", n_train=10, n_test=8, test_books="training")
    assert _rows(same_books["train"]) == train
    test_en = _rows(same_books["test_en"])
    assert len(test_en) == 8 and all(" train verse " in r["text"] for r in test_en)
    assert not {r["text"] for r in test_en} & {r["text"] for r in english}


def test_job_list_and_bad_options(tmp_path, capsys):
    study = _study()
    args = study.argparse.Namespace(backbone=["a=x", "b=y"], seeds=[1, 2], settings=list(study.SETTINGS),
                                    algorithms=["first_order", "l0"], sparsities=[0.5, 0.9])
    jobs = study.jobs(args)
    # per backbone and seed: bag_of_tokens, dense, dense_en, ds, and 3 pruned settings x 2 algorithms x 2 sparsities
    assert len(jobs) == 2 * 2 * (4 + 3 * 2 * 2)
    assert {j["setting"] for j in jobs} == set(study.SETTINGS)
    for argv, message in (([], "--data and at least one --backbone"),
                          (["--data", "d", "--backbone", "veco"], "--backbone takes NAME=FOLDER"),
                          (["--data", "d", "--backbone", f"a={tmp_path}"], "--backbone takes NAME=FOLDER")):
        with pytest.raises(SystemExit) as stop:
            study.sys.argv = ["multilingual.py", *argv]
            study.main()
        assert stop.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_one_run_of_each_kind_on_a_tiny_xlmr(bible, tmp_path, monkeypatch):
    from plmkit.core.models import load_model

    model, tokenizer = load_model("tiny-xlmr", kind="masked-lm")
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    out = tmp_path / "study.json"
    monkeypatch.setattr("sys.argv", [
        str(SCRIPT), "--data", str(bible), "--backbone", f"tiny={tmp_path / 'tiny'}", "--seeds", "1",
        "--settings", "bag_of_tokens", "dense", "per_language", "ds", "--algorithms", "first_order", "--sparsities", "0.5",
        "--train", "24", "--test", "12", "--retrieval", "12", "--steps", "4", "--batch", "8",
        "--work_dir", str(tmp_path / "work"), "--json", str(out), "--precision", "fp32"])
    _study().main()
    runs = {r["setting"]: r for r in json.loads(out.read_text())["runs"]}
    assert set(runs) == {"bag_of_tokens", "dense", "per_language", "ds"}
    # the bag of tokens learns the made-up verses, whose last word is their group (a third of them each)
    assert all(runs["bag_of_tokens"][f"accuracy_{lang}"] > 0.5 for lang in LANGUAGES)
    assert not any(k.startswith("p_at_1") for k in runs["bag_of_tokens"])
    scores = [runs["dense"], runs["per_language"], *runs["ds"]["by_sparsity"].values()]
    assert set(runs["ds"]["by_sparsity"]) == {"0.0", "0.5"}
    for found in scores:
        assert all(0 <= found[f"accuracy_{lang}"] <= 1 for lang in LANGUAGES)
        assert all(0 <= found[f"p_at_1_{p}"] <= 1 for p in ("de_en", "fr_en"))
    assert runs["per_language"]["head_sparsity"] == 0.5


def test_the_results_block_renders_tables_and_paired_verdicts(tmp_path, monkeypatch):
    render = load_script(SCRIPT.parent / "render_table.py")

    def scores(accuracy, p_at_1=0.5):
        return {**{f"accuracy_{lang}": accuracy for lang in LANGUAGES}, "p_at_1_de_en": p_at_1, "p_at_1_fr_en": p_at_1}

    runs = []
    for seed, noise in ((1, 0.0), (2, 0.01), (3, -0.01)):
        base = {"backbone": "veco", "seed": seed}
        runs += [{**base, "setting": "dense", "algorithm": "-", "sparsity": 0.0, **scores(0.8 + noise)},
                 {**base, "setting": "bag_of_tokens", "algorithm": "-", "sparsity": 0.0,
                  **{f"accuracy_{lang}": 0.9 for lang in LANGUAGES}},
                 {**base, "setting": "shared", "algorithm": "first_order", "sparsity": 0.5, **scores(0.7 + noise),
                  "process_cpu_s": 100.0},
                 {**base, "setting": "shared", "algorithm": "first_order", "sparsity": 0.9, **scores(0.5 + noise),
                  "process_cpu_s": 100.0},
                 {**base, "setting": "per_language", "algorithm": "first_order", "sparsity": 0.5,
                  **scores(0.6 + 2 * noise)},
                 {**base, "setting": "ds", "algorithm": "-", "sparsity": 0.0, "process_cpu_s": 180.0,
                  "by_sparsity": {"0.0": scores(0.8), "0.5": scores(0.7 + noise + 0.002), "0.9": scores(0.53)}}]
    settings = {"steps": 600, "batch": 32, "lr": 5e-4, "max_length": 64, "precision": "bf16", "threads": 1,
                "train_verses": 2000, "test_verses": 1000, "test_books": "training", "retrieval_pairs": 1000,
                "majority": {"en": 0.3, "de": 0.3, "fr": 0.3}}
    (tmp_path / "structured_pruning_multilingual.json").write_text(json.dumps({"settings": settings, "runs": runs}))
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    text = "\n".join(render.multilingual_block())
    assert "tested on other verses of the training books" in text and "scores en 30.0%, de 30.0%" in text
    assert "| dense | - | 80.0 ± 1.0 (n=3) |  |" in text
    assert text.count("| bag_of_tokens | - | 90.0 ± 0.0 (n=3) |") == 1  # accuracy only: it has no encoder to retrieve
    assert "| ds | - | 80.0 ± 0.0 (n=3) | 70.2 ± 1.0 (n=3) | 53.0 ± 0.0 (n=3) |" in text
    assert "| finding (A vs B) | 50% | 90% | all |" in text
    # per-language masks ran at 50% only: no 90% cell, and "all" pools the sparsities both sides ran at every seed
    assert ("| per-language masks beat one shared mask (first_order) | -10.0 +- 0.6 (3 seeds): contradicted |  | "
            "-10.0 +- 0.6 (3 seeds): contradicted |") in text
    assert ("| DS (one run) against separate first-order pruning | +0.2 +- 0.0 (3 seeds): supported | "
            "+3.0 +- 0.6 (3 seeds): supported | +1.6 +- 0.3 (3 seeds): supported |") in text
    assert "trains in 180 CPU s, 1.80x one separately pruned first-order run (100 s" in text
