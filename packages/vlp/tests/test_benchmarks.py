"""The benchmark scripts' mechanics on tiny data: the reproduction runs every arm, resumes without repeating a run,
draws the retrieval figure, and its table and verdicts render; the README matches the json files."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from plmkit.core.testing import load_script

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name):
    return load_script(BENCH / f"{name}.py")


def test_readme_results_block_matches_the_json_files():
    result = subprocess.run([sys.executable, str(BENCH / "render_table.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
def test_reproduction_smoke_runs_every_arm_resumes_and_renders(tmp_path, monkeypatch):
    reproduce, render = _script("reproduce"), _script("render_table")
    output = tmp_path / "vlp_reproduction.json"
    figure = importlib.util.find_spec("matplotlib") is not None  # the bench extra draws the figure
    argv = ["reproduce.py", "--smoke", "--seeds", "1", "2", "--encoders", "test_resnet", "--max_steps", "2",
            "--batch_size", "6", "--output", str(output), *(["--figure"] if figure else []), "--method_option",
            "mlm_weight=0.5", "--work_dir", str(tmp_path / "work"), "--parallel", "2", "--eval_examples", "4",
            "--tower_steps", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    reproduce.main()
    runs = json.loads(output.read_text())["runs"]
    assert sorted((r["arm"], r["seed"]) for r in runs) == sorted(
        (arm, seed) for arm in ("dual_encoder", "single", "two", "alternate") for seed in (1, 2))
    for r in runs:
        keys = ["emb_t2i_r1", "emb_i2t_r10"] + ([] if r["arm"] == "dual_encoder" else
                                                ["itm_single_t2i_r1", "itm_two_t2i_r1", "itm_single_i2t_r5"])
        assert all(0.0 <= r[k] <= 1.0 for k in keys), r
        assert r["steps"] == 2 and r["batch_size"] == 6 and r["cpu_s"] > 0
        assert r["arm"] == "dual_encoder" or [c["step"] for c in r["curve"]] == [1, 2]  # loss/task logged per step
    assert output.with_suffix(".png").exists() == figure and (not figure or output.with_suffix(".png").stat().st_size)
    config = (tmp_path / "work" / "alternate-test_resnet-2" / "plmkit_config.yaml").read_text()
    assert "mlm_weight: 0.5" in config and "mode_schedule: alternate" in config
    reproduce.main()  # everything is done: nothing runs again
    assert len(json.loads(output.read_text())["runs"]) == 8
    text = render.render(tmp_path)
    assert text.count("| test_resnet |") == 4 + 2 + 2  # 4 arms in the table, 2 comparisons in each verdict table
    assert "(2 seeds)" in text and "alternate - two-only, two-stream evaluation" in text
    assert "semvlp options mlm_weight=0.5" in text and "among the first 4 test emoji" in text
    assert (tmp_path / "work" / "tower-test_resnet" / "tower-2.safetensors").exists()  # every seed starts from it
    assert "(a trained dual-encoder tower: 2 steps x batch 4" in text
    (tmp_path / "vlp_reproduction_vit.json").write_text(output.read_text())  # another encoder family beside it
    both = render.render(tmp_path)
    assert both.startswith(text.split("![")[0].rstrip()) and "Reproduction (`vlp_reproduction_vit.json`)" in both
    assert both.count("| test_resnet |") == 2 * 8
    (tmp_path / "vlp_reproduction_4_steps.json").write_text(output.read_text())  # a budget check
    again = render.render(tmp_path)
    assert again.startswith(both.split("![")[0].rstrip()) and "Budget check (`vlp_reproduction_4_steps.json`)" in again
    assert again.count("| test_resnet |") == 3 * 8  # after both reproductions


def test_the_towers_metrics_file_is_recorded_and_named_in_the_setup(tmp_path):
    reproduce = _script("reproduce")
    weights = tmp_path / "tower-1500.safetensors"
    assert reproduce.tower_note(weights, {}) == ""  # no metrics file beside the weights: nothing to say
    metrics = {"steps": 1500, "batch_size": 32, "learning_rate": 1e-3, "seed": 1, "emb_t2i_r1": 0.2267}
    weights.with_suffix(".json").write_text(json.dumps(metrics))
    result = {"runs": []}
    note = reproduce.tower_note(weights, result)
    assert result["tower"] == metrics
    assert "1500 steps x batch 32" in note and "seed 1" in note and "R@1 22.7%" in note


@pytest.mark.parametrize("argv, message", [
    (["--tower_steps", "-1"], "--tower_steps must be >= 0"),
    (["--tower_steps", "5", "--image_encoder_from", "t.safetensors"], "not both"),
    (["--tower_steps", "5"], "pass --encoders with one name, got ['test_resnet', 'test_vit']"),
])
def test_bad_tower_options_are_refused_before_any_work(argv, message, monkeypatch, tmp_path):
    reproduce = _script("reproduce")
    monkeypatch.setattr(sys, "argv", ["reproduce.py", "--smoke", "--work_dir", str(tmp_path / "work"), *argv])
    with pytest.raises(SystemExit, match=re.escape(message)):
        reproduce.main()
    assert not (tmp_path / "work").exists()
