"""`plmkit knowledge probe|analyze`, run in-process on a tiny model saved to a folder."""

from __future__ import annotations

import json

import pytest

from plmkit.core.cli import main as plmkit_main
from plmkit.core.errors import DataError
from plmkit.core.testing import tiny_model
from plmkit.knowledge_pretraining.commands import main
from plmkit.knowledge_pretraining.probe import probe

from .test_probe import FACTS


@pytest.fixture
def saved(tmp_path):
    model, tokenizer = tiny_model("bert", head="masked-lm")
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps(f) + "\n" for f in FACTS))
    return folder, facts, (model.eval(), tokenizer)


def test_probe_command_writes_json(saved, tmp_path, capsys):
    folder, facts, (model, tokenizer) = saved
    out = tmp_path / "probe.json"
    assert main(["probe", "--model", str(folder), "--facts", str(facts), "--output", str(out), "--predictions"]) == 0
    written = json.loads(out.read_text())
    want = probe(model, tokenizer, FACTS)
    assert written["overall"] == pytest.approx(want["overall"], nan_ok=True)
    assert written["by_relation"]["hypernym"]["p_at_10"] == want["by_relation"]["hypernym"]["p_at_10"]
    assert written["probed"] == 5 and written["skipped"] == {"answer_not_single_token": 1}
    assert len(written["predictions"]) == 5 and written["model"] == str(folder)
    printed = capsys.readouterr().out
    assert "5 of 6 facts probed" in printed and "hypernym" in printed
    out2 = tmp_path / "control.json"
    assert main(["probe", "--model", str(folder), "--facts", str(facts), "--split", "control", "--limit", "2",
                 "--output", str(out2)]) == 0
    control = json.loads(out2.read_text())
    assert control["facts"] == 2 and set(control["by_split"]) <= {"control"}


def test_analyze_command_writes_json(saved, tmp_path, capsys):
    folder, _, _ = saved
    texts = tmp_path / "texts.txt"
    texts.write_text("the zebra of new york was a good story\nwho is the movie city person\n\nthe story , and a film\n")
    lexicon = tmp_path / "lemmas.txt"
    lexicon.write_text("new york\nstory\nzebra\nmovie\ncity\nfilm\n")
    out = tmp_path / "analysis.json"
    assert main(["analyze", "--model", str(folder), "--texts", str(texts), "--lexicon", str(lexicon),
                 "--mask_stride", "2", "--output", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["sentences"] == 3 and written["lexicon"] == str(lexicon)
    assert written["words"]["kb"] == written["cloze"]["kb"]["words"] == 8
    assert written["cloze"]["mask_stride"] == 2 and written["attention"]["kf"]["words"] > 0
    assert "cloze error rate" in capsys.readouterr().out


def test_bad_input_is_a_clear_error(saved, tmp_path, capsys):
    folder, _, _ = saved
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "no mask here", "answers": ["film"]}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1: "):
        main(["probe", "--model", str(folder), "--facts", str(bad)])
    assert plmkit_main(["knowledge", "probe", "--model", str(folder), "--facts", str(bad)]) == 2
    assert "exactly one [MASK]" in capsys.readouterr().err
