"""The reproduction's bookkeeping without running it: mlm_time's steps from the measured step cost, and the README
block rendered from a small made-up json (every stage present, the verdict rows, the geometry table)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from plmkit.core.testing import load_script

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    return load_script(BENCHMARKS / f"{name}.py")


def test_mlm_time_gets_the_steps_a_capt_run_costs():
    repro = _load("reproduce")
    ratio = json.loads((BENCHMARKS / "results" / "capt_perf.json").read_text())["ratio_cpu_median"]["capt"]
    assert repro.variant_steps("mlm_time", 1000) == round(1000 * ratio)
    assert repro.variant_steps("mlm", 1000) == repro.variant_steps("capt", 1000) == 1000
    flags = repro.pretrain_flags("mlm_time", 1888, "m", smoke=False)
    assert flags[flags.index("--method") + 1] == "finetune"  # MLM only


def test_the_two_fine_tuning_regimes():
    repro = _load("reproduce")
    k16 = repro.finetune_flags({"task": "trec", "seed": 21, "regime": "k16"}, "m", 50)
    n1000 = repro.finetune_flags({"task": "trec", "seed": 21, "regime": "n1000"}, "m", 50)
    assert k16[k16.index("--few_shot_k") + 1] == "16" and k16[k16.index("--max_steps") + 1] == "50"
    assert n1000[n1000.index("--max_train_samples") + 1] == "1000" and "--few_shot_k" not in n1000
    assert "--max_steps" not in n1000 and n1000[n1000.index("--seed") + 1] == "21"


def _made_up_runs(seeds: list[int]) -> list[dict]:
    runs: list[dict] = [{"stage": "head", "model": "minilm", "steps": 300, "losses": {"first": 9.0, "last": 4.0}}]
    for model, steps in (("mlm", 10), ("mlm_time", 19), ("capt", 10)):
        runs.append({"stage": "pretrain", "model": model, "steps": steps, "eval_masked_loss": 3.0,
                     "eval_masked_accuracy": 0.4, "process_cpu_s": 100.0,
                     "curve": [{"step": steps, "loss/capt": 0.5}] if model == "capt" else [],
                     **({"capt_alignment": 0.2, "capt_uniformity": -3.0} if model == "capt" else {})})
    for model in ("minilm", "mlm", "mlm_time", "capt"):
        cos = {noise: [0.9, 0.8] for noise in ("masking", "shuffling", "substitution", "unrelated")}
        runs.append({"stage": "probe", "model": model, "sentences": 2, "cls": cos, "mean": cos,
                     "geometry": {p: {"alignment": 0.1, "uniformity": -2.0} for p in ("cls", "mean")}})
        for regime in ("k16", "n1000"):
            for seed in seeds:
                runs.append({"stage": "finetune", "regime": regime, "model": model, "task": "trec", "seed": seed,
                             "test_accuracy": (0.5 if regime == "k16" else 0.8) + (0.01 * seed if model == "capt"
                                                                                   else 0.0)})
    return runs


def test_the_readme_block_renders_every_stage(tmp_path):
    render = _load("render_table")
    seeds = [13, 21, 42]
    path = tmp_path / "repro.json"
    settings = {"base_model": "minilm", "pretrain_steps": 10, "mlm_time_steps": 19, "head_steps": 300,
                "models": ["minilm", "mlm", "mlm_time", "capt"], "finetune_steps": 50, "seeds": seeds,
                "full_seeds": seeds, "full_examples": 1000, "tasks": ["trec"]}
    path.write_text(json.dumps({"settings": settings, "runs": _made_up_runs(seeds)}))
    text = render.render_reproduction(path)
    assert "Status: complete." in text and "MLM only, same CPU time: 19 steps" in text
    assert "MLM loss 9.00 -> 4.00" in text
    k16, n1000 = text.split("#### Fine-tuning on 1,000 examples")
    assert "| trec | 50.00 ± 0.00 (n=3) |" in k16 and "| trec | 80.00 ± 0.00 (n=3) |" in n1000
    assert "| MLM + CAPT - MLM only, same CPU time |" in text  # the equal-compute claim has its row
    assert "| cls | unrelated |" in text and "0.1000 / -2.000" in text  # the reference row and the geometry table
    runs = _made_up_runs(seeds)[:-1]  # one fine-tuning run missing
    path.write_text(json.dumps({"settings": settings, "runs": runs}))
    assert f"INCOMPLETE: {len(runs)} of {len(runs) + 1} jobs" in render.render_reproduction(path)


def test_runs_from_a_second_pre_training_are_named_with_its_losses(tmp_path, monkeypatch):
    render = _load("render_table")
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    runs = _made_up_runs([13, 42])
    assert render.pretrained_again_note(runs) == ""
    again = [{**r, "eval_masked_loss": r.get("eval_masked_loss", 7.0) + 0.0004}
             for r in runs if r["stage"] in ("head", "pretrain")]
    (tmp_path / "again.json").write_text(json.dumps({"settings": {"precision": "bf16"}, "runs": again}))
    for r in runs:
        if r["stage"] == "finetune" and r["seed"] == 42 and r["regime"] == "n1000" and r["model"] != "minilm":
            r["pretrained_again"] = "again.json"
    note = render.pretrained_again_note(runs)
    assert note.startswith(" 3 fine-tuning runs (n1000 seed 42, marked `pretrained_again`")
    assert "(again.json:" in note and "in bf16 autocast" in note and "by at most 0.0004" in note
    assert "MLM + CAPT 3.0000 -> 3.0004" in note


def test_a_tower_trained_again_is_named_per_seed():
    render = _load("render_table")
    encoder = {"emb_t2i_r1": 0.25}
    runs = [{"seed": s, "arm": a} for s in (1, 2) for a in ("capt", "no_capt")]
    assert render.tower_r1(encoder, runs) == "25.0%"
    for r in runs:
        r["tower_t2i_r1"] = 0.2 if r["seed"] == 1 else 0.25
    assert render.tower_r1(encoder, runs).startswith("20.0% for seeds [1], 25.0% for seeds [2]: one tower per group")


def test_plotting_without_matplotlib_names_the_extra(tmp_path, monkeypatch):
    render = _load("render_table")
    path = tmp_path / "repro.json"
    path.write_text(json.dumps({"settings": {}, "runs": _made_up_runs([13])}))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets where it is not installed
    with pytest.raises(SystemExit, match=r"plmkit-capt\[bench\]"):
        render.plot(path)


def test_base_runs_are_copied_only_from_a_sweep_with_the_same_fine_tuning(tmp_path):
    repro, render = _load("reproduce"), _load("render_table")
    flags = repro.pretrain_flags("capt", 10, "m", smoke=False, data="builtin-text+toy")
    assert flags[flags.index("--data") + 1] == "builtin-text+toy"
    settings = {"base_model": "minilm", "precision": "fp32", "finetune_steps": 50, "full_examples": 1000,
                "finetune_flags": ["a"], "finetune_flags_n1000": ["b"]}
    source = tmp_path / "capt_reproduction.json"
    source.write_text(json.dumps({"settings": settings, "runs": _made_up_runs([13, 21])}))
    target = tmp_path / "new.json"
    repro.copy_base_runs(source, target, settings)
    copied = json.loads(target.read_text())["runs"]
    assert len(copied) == 4 and {(r["stage"], r["model"], r["from"]) for r in copied} == {
        ("finetune", "minilm", "capt_reproduction.json")}
    repro.copy_base_runs(source, target, settings)  # again: nothing twice
    assert len(json.loads(target.read_text())["runs"]) == 4
    assert "copied with `--base_runs_from`" in render.copied_note(copied)
    with pytest.raises(SystemExit, match=r"other settings \(finetune_steps\)"):
        repro.copy_base_runs(source, target, {**settings, "finetune_steps": 100})


def test_precision_flags_follow_the_choice():
    repro = _load("reproduce")
    for precision, want in (("bf16", ["--bf16", "true"]), ("fp32", [])):
        flags = repro.pretrain_flags("capt", 10, "m", smoke=False, precision=precision)
        assert (flags[flags.index("--bf16"):flags.index("--bf16") + 2] if "--bf16" in flags else []) == want
        job = {"task": "trec", "seed": 13, "regime": "k16"}
        assert ("--bf16" in repro.finetune_flags(job, "m", 50, precision=precision)) == bool(want)
    assert repro.resolve_precision() in ("bf16", "fp32") and repro.resolve_precision("fp32") == "fp32"


def test_the_vision_language_arms_differ_only_in_the_capt_weight():
    vl = _load("vl_retrieval")
    flags = {arm: vl.train_flags(arm, 1, Path("m"), 300, 0.05, ["--data", "emoji"]) for arm in vl.ARMS}
    weights = {arm: f[f.index("--method.capt_weight") + 1] for arm, f in flags.items()}
    assert weights == {"capt": "1.0", "no_capt": "0.0", "capt_0.1": "0.1"}
    rest = {arm: [x for i, x in enumerate(f) if i != f.index("--method.capt_weight") + 1] for arm, f in flags.items()}
    assert rest["capt"] == rest["no_capt"] == rest["capt_0.1"]


def test_the_vision_language_block_pairs_the_arms_by_seed(tmp_path):
    table = _load("render_table")
    runs = [{"arm": arm, "seed": seed, "test_itm_single_t2i_r1": r1, "test_itm_single_i2t_r1": r1,
             "test_itm_single_t2i_r5": 2 * r1, "process_cpu_s": 100.0}
            for seed, base in ((1, 0.10), (2, 0.20), (3, 0.30))
            for arm, r1 in (("capt", base + 0.02), ("no_capt", base))]
    path = tmp_path / "vl.json"
    path.write_text(json.dumps({"settings": {"data": "the emoji builtin", "steps": 300, "seeds": [1, 2, 3],
                                             "mlm_weight": 0.05, "arms": {"capt": 1.0, "no_capt": 0.0}},
                                "runs": runs}))
    block = table.render_vl(path)
    assert "Status: complete" in block
    assert "| text->image R@1 | 22.00 ± 10.00 (n=3) | 20.00 ± 10.00 (n=3) | +2.0 +- 0.0 (3 seeds): supported |" in block
    path.write_text(json.dumps({"settings": json.loads(path.read_text())["settings"], "runs": runs[:3]}))
    assert "INCOMPLETE: 3 of 6 runs" in table.render_vl(path)
    # a third arm added later: its own column and verdict against no_capt; status counts it
    light = [{**r, "arm": "capt_0.1", "test_itm_single_t2i_r1": r["test_itm_single_t2i_r1"] - 0.01}
             for r in runs if r["arm"] == "no_capt"]
    settings = {**json.loads(path.read_text())["settings"], "arms": {"capt": 1.0, "no_capt": 0.0, "capt_0.1": 0.1}}
    path.write_text(json.dumps({"settings": settings, "runs": runs + light[:2]}))
    block = table.render_vl(path)
    assert "INCOMPLETE: 8 of 9 runs" in block and "| 0.1 x CAPT - none |" in block
    assert "| text->image R@1 | 22.00 ± 10.00 (n=3) | 14.00 ± 7.07 (n=2) | 20.00 ± 10.00 (n=3) |" in block
    assert "-1.0 +- 0.0 (2 seeds): contradicted |" in block


def test_the_vision_language_smoke_starts_both_arms_from_the_trained_tower(tmp_path, monkeypatch):
    """`--smoke`: the dual-encoder tower is trained once, both arms' model starts from it, the json records it."""
    from safetensors.torch import load_file

    from plmkit.core.models import load_model

    vl = _load("vl_retrieval")
    monkeypatch.setattr(sys, "argv", ["vl_retrieval.py", "--smoke", "--work", str(tmp_path), "--steps", "2",
                                      "--tower_steps", "2", "--parallel", "1", "--eval_examples", "6"])
    vl.main()
    work = tmp_path / "tower2"
    result = json.loads((work / "capt_vl_retrieval_smoke.json").read_text())
    assert {(r["arm"], r["seed"]) for r in result["runs"]} == {("capt", 1), ("no_capt", 1)}
    encoder = result["settings"]["image_encoder"]
    assert encoder["from"] == "dual-encoder tower" and encoder["steps"] == 2 and 0 <= encoder["emb_t2i_r1"] <= 1
    assert all(r["tower_t2i_r1"] == encoder["emb_t2i_r1"] for r in result["runs"])  # each run names its tower
    tower = load_file(str(work / "tower-2.safetensors"))
    start = load_model(str(work / "init-1"), kind="masked-lm")[0].base_model.image_encoder.backbone.state_dict()
    assert all(torch.equal(start[k], tower[k]) for k in tower)
