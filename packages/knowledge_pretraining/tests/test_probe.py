"""The cloze probe: P@k against a direct computation, skipped facts, the majority baseline, bad facts files, and the
`cloze_probe` task through `plmkit train` with zero training epochs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from plmkit.core.errors import DataError, TaskError
from plmkit.core.tasks import DataSource, build_task
from plmkit.core.testing import run_cli, tiny_model
from plmkit.knowledge_pretraining.probe import flatten_metrics, probe, read_facts

from .conftest import TINY

FACTS = [
    {"subject": "dog", "relation": "hypernym", "query": "dog is a type of [MASK] .", "answers": ["film", "story"],
     "split": "injected"},
    {"subject": "cat", "relation": "hypernym", "query": "cat is a type of [MASK] .", "answers": ["film"],
     "split": "control"},
    {"subject": "cow", "relation": "hypernym", "query": "cow is a type of [MASK] .", "answers": ["city"],
     "split": "injected"},
    {"subject": "leg", "relation": "part-of", "query": "leg is a component of [MASK] .", "answers": ["person"],
     "split": "injected"},
    {"subject": "arm", "relation": "part-of", "query": "arm is a component of [MASK] .", "answers": ["zebra", "name"],
     "split": "control"},
    # no answer is one token of the tiny vocabulary ("zebra" is z ##e ##b ##r ##a): skipped and counted
    {"subject": "elk", "relation": "member-of", "query": "elk belongs to [MASK] .", "answers": ["zebra", "herd"],
     "split": "control"},
]


def _model():
    """A tiny masked-LM model that prefers "film", then "city", at every position."""
    model, tokenizer = tiny_model("bert", head="masked-lm")
    with torch.no_grad():
        bias = model.get_output_embeddings().bias
        bias[tokenizer.convert_tokens_to_ids("film")] += 30.0
        bias[tokenizer.convert_tokens_to_ids("city")] += 20.0
    return model.eval(), tokenizer


def _direct(model, tokenizer, fact, k):
    """The top-k tokens of one query, from the full logits of one forward (special tokens excluded)."""
    enc = tokenizer(fact["query"].replace("[MASK]", tokenizer.mask_token), return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[0]
    row = logits[enc["input_ids"][0].tolist().index(tokenizer.mask_token_id)].clone()
    row[tokenizer.all_special_ids] = float("-inf")
    return row.topk(k).indices.tolist()


def test_probe_equals_a_direct_computation_and_counts_skipped_facts():
    model, tokenizer = _model()
    result = probe(model, tokenizer, FACTS, batch_size=2, k=(1, 10), return_predictions=True)
    assert result["facts"] == 6 and result["probed"] == 5
    assert result["skipped"] == {"answer_not_single_token": 1}
    hits = {1: [], 10: []}
    by_relation = {}
    for fact in FACTS[:5]:
        gold = [tokenizer.convert_tokens_to_ids(a) for a in fact["answers"] if a != "zebra"]
        top = _direct(model, tokenizer, fact, 10)
        for k in (1, 10):
            hit = any(g in top[:k] for g in gold)
            hits[k].append(hit)
            by_relation.setdefault((fact["relation"], k), []).append(hit)
    for k in (1, 10):
        assert result["overall"][f"p_at_{k}"] == pytest.approx(sum(hits[k]) / 5)
        for relation in ("hypernym", "part-of"):
            values = by_relation[(relation, k)]
            assert result["by_relation"][relation][f"p_at_{k}"] == pytest.approx(sum(values) / len(values))
    assert result["overall"]["p_at_1"] == pytest.approx(2 / 5)  # "film" facts
    assert 2 / 5 < result["overall"]["p_at_10"] < 1.0  # "city" is second; the others' answers are not
    p = result["overall"]["p_at_1"]
    assert result["overall"]["p_at_1_se"] == pytest.approx(math.sqrt(p * (1 - p) / 5))
    assert result["by_split"]["injected"]["n"] == 3 and result["by_split"]["control"]["n"] == 2
    assert result["by_split_relation"]["control/part-of"]["n"] == 1
    assert [x["top"][0] for x in result["predictions"]] == ["film"] * 5
    flat = flatten_metrics(result, "test")
    assert flat["test_p_at_1"] == result["overall"]["p_at_1"]
    assert flat["test_p_at_10/injected/hypernym"] == result["by_split_relation"]["injected/hypernym"]["p_at_10"]
    assert flat["test_skipped/answer_not_single_token"] == 1


def test_majority_baseline():
    model, tokenizer = _model()
    result = probe(model, tokenizer, FACTS, batch_size=8)
    hypernym = result["by_relation"]["hypernym"]
    assert hypernym["majority_answer"] == "film"  # gold in two of the three hypernym facts
    assert hypernym["baseline_p_at_1"] == pytest.approx(2 / 3)
    assert result["by_relation"]["part-of"]["baseline_p_at_1"] == pytest.approx(1 / 2)
    assert result["overall"]["baseline_p_at_1"] == pytest.approx(3 / 5)
    assert result["by_split"]["control"]["baseline_p_at_1"] == pytest.approx(1 / 2)  # cat: film; arm: name != person


@pytest.mark.parametrize(("line", "message"), [
    ('{"query": "x is a [MASK] ."}', "no 'answers' field"),
    ('{"answers": ["film"]}', "no 'query'"),
    ('{"query": "x is a [MASK] of [MASK] .", "answers": ["film"]}', "exactly one [MASK]"),
    ('{"query": "x is a film .", "answers": ["film"]}', "exactly one [MASK]"),
    ('{"query": "x is a [MASK] .", "answers": []}', "non-empty list"),
    ('{"query": "x is a [MASK] ."', "not valid JSON"),
])
def test_bad_facts_files_are_clear_errors(tmp_path, line, message):
    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps(FACTS[0]) + "\n" + line + "\n")
    with pytest.raises(DataError, match=r"facts\.jsonl:2: ") as err:
        read_facts(path)
    assert message in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        read_facts(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="is empty"):
        read_facts(tmp_path / "empty.jsonl")


def test_task_loads_facts_and_refuses_to_train(tmp_path):
    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(f) + "\n" for f in FACTS))
    task = build_task("cloze_probe", {"split": "injected"}, DataSource(test_file=str(path)))
    splits = task.load()
    assert splits["test"]["subject"] == ["dog", "cow", "leg"] and "train" not in splits
    with pytest.raises(TaskError, match="no training loss"):
        task.compute_loss(None, {})
    with pytest.raises(DataError, match="only evaluates"):
        build_task("cloze_probe", {}, DataSource(train_file=str(path))).load()
    with pytest.raises(TaskError, match="split"):
        build_task("cloze_probe", {"split": "train"}, DataSource(test_file=str(path)))


def test_plmkit_train_only_evaluates_and_writes_probe_metrics(tmp_path):
    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(f) + "\n" for f in FACTS))
    out = tmp_path / "run"
    run_cli(["train", "--task", "cloze_probe", "--test_file", str(path), *TINY,
             "--output_dir", str(out), "--per_device_eval_batch_size", "4", "--seed", "0"])
    metrics = json.loads((out / "metrics.json").read_text())
    model, tokenizer = tiny_model("bert", head="masked-lm")  # the same random model the alias builds (seed 0)
    want = flatten_metrics(probe(model, tokenizer, FACTS), "test")
    for key in ("test_p_at_1", "test_p_at_10", "test_p_at_1/hypernym", "test_p_at_10/control", "test_probed"):
        assert metrics[key] == pytest.approx(want[key])
    assert metrics["test_probed"] == 5
