"""The reproduction script's data helpers and the README renderer (on a made-up results file)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from plmkit.core.testing import load_script

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    sys.path.insert(0, str(BENCH.parents[2] / "tools" / "bench"))
    return load_script(BENCH / f"{name}.py")


def test_statements_are_found_as_whole_sentences():
    reproduce = _module("reproduce")
    line = "coin: a flat metal piece (usually a disc) used as money. coin is a kind of coinage or specie."
    assert "coin is a kind of coinage or specie." in reproduce._sentences(line)
    assert "tie clip is a kind of coinage or specie." not in reproduce._sentences(line)


def _probe(p_inj: float, p_ctl: float) -> dict:
    group = {"n": 10, "p_at_1": p_inj, "p_at_1_se": 0.1, "p_at_10": 0.5, "p_at_10_se": 0.1,
             "baseline_p_at_1": 0.05, "baseline_p_at_1_se": 0.01}
    return {"by_split": {"injected": group, "control": {**group, "p_at_1": p_ctl}},
            "by_split_relation": {"injected/hypernym": group}}


def _findings(kb: float) -> dict:
    return {"cloze": {"kb": {"error_rate": kb}, "kf": {"error_rate": 0.3}, "difference": {"mean": kb - 0.3}},
            "attention": {"kb": {"mean": 1.1}, "kf": {"mean": 0.9}, "difference": {"mean": 0.2}}}


def test_render_reports_paired_verdicts_against_random(tmp_path, monkeypatch):
    render = _module("render_table")
    runs = [{"stage": "head", "losses": {"first": 9.0, "last": 4.0}},
            {"stage": "data", "facts": {"injected": 10, "control": 10}, "train_lines": 40, "stating_lines": 20},
            {"stage": "before", "probe": _probe(0.1, 0.05), "findings": _findings(0.6)}]
    for seed, (rand, guided) in enumerate([(0.20, 0.30), (0.22, 0.31), (0.21, 0.33)], 1):
        runs.append({"stage": "pretrain", "policy": "random", "seed": seed, "eval_masked_loss": 3.0, "cpu_s": 100.0,
                     "probe": _probe(rand, 0.05), "findings": _findings(0.5)})
        runs.append({"stage": "pretrain", "policy": "loss_guided", "seed": seed, "eval_masked_loss": 3.1,
                     "cpu_s": 100.0 + 10 * seed, "method": {"masking_rescoring_seconds": 9.0},
                     "probe": _probe(guided, 0.05), "findings": _findings(0.4)})
    runs.append({"stage": "finetune", "policy": "head", "task": "trec", "test_accuracy": 0.8})
    settings = {"base": "minilm", "head_steps": 300, "batch": 32, "steps": 400, "lr": 5e-5, "max_length": 64,
                "analysis_lines": 150, "smoke": False}
    path = tmp_path / "reproduction.json"
    path.write_text(json.dumps({"settings": settings, "runs": runs}))
    monkeypatch.setattr(render, "JSON", path)
    text = render.render()
    assert "MLM loss 9.00 -> 4.00" in text
    row = next(line for line in text.splitlines() if line.startswith("| loss_guided |"))
    assert "31.3 +- 1.5" in row and "(3 seeds): supported" in row and "+0.0 +- 0.0 (3 seeds): within noise" in row
    assert "| head-only MiniLM | 80.0 |" in text
    assert "1.20x the process CPU time" in text and "took 9 s" in text


def test_render_without_results_says_not_run(tmp_path, monkeypatch):
    render = _module("render_table")
    monkeypatch.setattr(render, "JSON", tmp_path / "none.json")
    assert render.render().startswith("Not run yet")
