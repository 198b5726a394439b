"""The reproduction's budget check (`reproduce.py --pretrain_steps`): its own runs and json, and how render_table.py
shows it after its budget (made-up results; nothing is trained)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from plmkit.core.testing import load_script

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _benchmark(name: str):
    """benchmarks/NAME.py, imported as a module."""
    return load_script(BENCHMARKS / f"{name}.py")


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
    render = _benchmark("render_table")
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
    reproduce = _benchmark("reproduce")

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


PAIRS = [{"x": f"the king {i} went to the city of {i + 3}", "y": f"der König {i} ging in die Stadt {i * 7}",
          "kind": "parallel"} for i in range(7)]


def test_the_translation_probe_pairs_each_sides_tokens_with_and_without_its_translation(tokenizer):
    from plmkit.veco.modeling import VecoForPreTraining
    from plmkit.veco.tiny import tiny_model_config

    probe = _benchmark("translation_probe")
    torch.manual_seed(0)
    model = VecoForPreTraining(tiny_model_config(tokenizer))
    found = probe.probe(model, tokenizer, PAIRS, batch=3)  # batches of 3, 4: the last pair folds into the one before
    assert found["pairs"] == 7
    for side in ("x", "y"):
        assert found[side]["masked_tokens"] > 0
        assert 0 <= found[side]["s_stream_other"] <= 100 and 0 <= found[side]["h_stream"] <= 100

    # with cross-attention's output at zero the S-stream cannot read its memory: true and other agree pair by pair
    # on both sides (a y side scored against another pair's tokens would not)
    for layer in model.veco.layers:
        torch.nn.init.zeros_(layer.encoder_attn.out_proj.weight)
        torch.nn.init.zeros_(layer.encoder_attn.out_proj.bias)
    blind = probe.probe(model, tokenizer, PAIRS, batch=3)
    for side in ("x", "y"):
        assert blind[side]["s_stream_true"] == blind[side]["s_stream_other"]
        assert blind[side]["true_minus_other"] == (0.0, 0.0)


def test_the_translation_probe_needs_translation_pairs(tmp_path, tokenizer):
    probe = _benchmark("translation_probe")
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "validation.jsonl").write_text(json.dumps({**PAIRS[0], "kind": "mono"}) + "\n")
    with pytest.raises(SystemExit, match="holds no `parallel` \\(translation\\) pairs"):
        probe.translation_pairs(tmp_path, None)
    with pytest.raises(SystemExit, match="--data must be a `plmkit veco prepare-data` folder"):
        probe.translation_pairs(tmp_path / "elsewhere", None)
    with pytest.raises(ValueError, match="at least 2 translation pairs"):
        probe.probe(None, tokenizer, PAIRS[:1])


def test_the_translation_probe_renders_one_row_per_model_and_side():
    render = _benchmark("render_table")
    side = {"masked_tokens": 1200, "h_stream": 20.0, "s_stream_true": 21.5, "s_stream_other": 20.25,
            "true_minus_other": [1.25, 0.5]}
    text = "\n".join(render.translation_probe({"models": {"veco_4500": {"pretraining_steps": 4500, "pairs": 400,
                                                                         "x": side, "y": side}}}))
    assert "400 held-out translation pairs" in text
    assert "| veco_4500 | 4500 | x | 1,200 | 20.00 | 21.50 | 20.25 | +1.25 +- 0.50 |" in text
    assert "| veco_4500 | 4500 | y |" in text
