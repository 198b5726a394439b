"""The reproduction's budget check (`reproduce.py --pretrain_steps`): its own runs and json, and how render_table.py
shows it after its budget (made-up results; nothing is trained)."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _render_module():
    spec = importlib.util.spec_from_file_location("veco_render_table", BENCHMARKS / "render_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runs(seeds, bleu: dict[str, float], accuracy: float) -> list[dict]:
    runs = []
    for seed in seeds:
        for arm, value in bleu.items():
            runs.append({"stage": "nlg", "arm": arm, "seed": seed, "test_bleu": value + seed / 10,
                         "process_cpu_s": 600.0})
            if arm == "random":
                continue
            streams = ("mlm", "ca_mlm") if arm == "veco" else ("mlm",)
            runs.append({"stage": "pretrain", "arm": arm, "seed": seed, "process_cpu_s": 60.0,
                         **{f"eval_{s}_{side}_accuracy": accuracy + (0.1 if s == "ca_mlm" else 0.0)
                            for s in streams for side in "xy"}})
    return runs


def _settings(steps: int) -> dict:
    return {"setup": "Arms (a), (b), (c).", "precision": "bf16", "vocab_size": 100, "retrieval": 10,
            "shape": {"num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 16},
            "pretrain": {"steps": steps, "batch": 4, "lr": 0.001, "max_length": 16},
            "mt": {"steps": 10, "batch": 4, "beams": 5, "eval_samples": 20},
            "cls": {"train": 40, "steps": 10, "eval_samples": 20}}


def test_a_budget_check_renders_after_its_budget_against_the_same_seeds(tmp_path, monkeypatch):
    render = _render_module()
    base = tmp_path / "veco_reproduction_cpu.json"
    base.write_text(json.dumps({"settings": _settings(100), "runs": _runs(
        (1, 2), {"random": 1.0, "mlm": 9.0, "veco": 9.0}, 0.15)}))
    (tmp_path / "veco_reproduction_cpu_pretrain300.json").write_text(json.dumps({"settings": _settings(300), "runs": _runs(
        (1,), {"mlm": 10.0, "veco": 12.0}, 0.25)}))
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    monkeypatch.setattr(render, "REPROS", [(base, "Reproduction at the CPU budget (`--scale cpu`)")])

    text = render.render()
    budget, check = text.split("**Budget check: reproduction at the CPU budget (`--scale cpu`) with 300 pre-training "
                               "steps (`--pretrain_steps 300`).** Setup: as above; only the pre-training steps differ.")
    assert "Setup: Arms (a), (b), (c)." in budget and "pre-training 100 steps" in budget
    assert "| (a) random init | 2 |" in budget and "(a) random init" not in check  # the check leaves random out
    assert "pre-training 300 steps" in check
    # seed 1 on both sides: BLEU 9.1 -> 10.1 (MLM) and 9.1 -> 12.1 (VECO); each stream's accuracy there -> here
    assert ("Against the same seed(s) (1) at 100 pre-training steps, there -> here: MLM-only pre-training: BLEU "
            "9.10 -> 10.10, H-stream 15.0% -> 25.0%; VECO CA-MLM: BLEU 9.10 -> 12.10, H-stream 15.0% -> 25.0%, "
            "S-stream 25.0% -> 35.0%.") in check
    assert "| VECO CA-MLM - MLM-only pre-training, de->en BLEU | +2.0 (1 seed: no verdict) |" in check
    assert "random init, de->en BLEU" not in check  # its claim on the random arm is left out, not "not run"


def test_reproduce_pretrain_steps_is_a_budget_check_with_its_own_runs_and_json(tmp_path):
    spec = importlib.util.spec_from_file_location("veco_reproduce", BENCHMARKS / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)

    def study(steps):
        return reproduce.Study(argparse.Namespace(scale="cpu", pretrain_steps=steps, work_dir=str(tmp_path),
                                                  threads=1, precision="fp32"))

    budget, check = study(None), study(4500)
    assert (check.data, check.tok) == (budget.data, budget.tok)  # the same data and vocabulary
    assert budget.work == tmp_path / "cpu" and check.work == tmp_path / "cpu" / "pretrain4500"
    assert check.json == budget.json.with_name("veco_reproduction_cpu_pretrain4500.json")
    assert check.scale["pretrain"]["steps"] == 4500 and budget.scale["pretrain"]["steps"] == 1500
    assert check.scale["mt"] == budget.scale["mt"]  # nothing else changes
    with pytest.raises(SystemExit, match="--pretrain_steps must be positive, got 0"):
        study(0)
