"""The shipped experiment config (configs/builtin_text_capt.yaml) through `plmkit train CONFIG`: it is capt on
masked_lm with the documented defaults, it matches the reproduction script's pre-training settings, and it runs
(shortened on tiny-bert and the toy corpus by command-line flags, which override the file); and the README's Python
usage (parse_experiment + train)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from plmkit.capt import CAPTConfig, CAPTMethod
from plmkit.core.cli import main
from plmkit.core.config import parse_experiment
from plmkit.core.testing import load_script
from plmkit.core.training import build_method

from .conftest import TINY, corpus_flags

PACKAGE = Path(__file__).resolve().parents[1]
CONFIG = PACKAGE / "configs" / "builtin_text_capt.yaml"


def _reproduce_module():
    return load_script(PACKAGE / "benchmarks" / "reproduce.py")


def test_the_shipped_config_is_capt_on_masked_lm_with_the_documented_defaults():
    cfg = parse_experiment([str(CONFIG)])
    assert (cfg.method_name, cfg.task_name) == ("capt", "masked_lm")
    method = build_method(cfg.method_name, cfg.method_options)
    # every option spelled out in the file is the default (tau 0.1, lambda 1, projection 128, cls, ...)
    assert isinstance(method, CAPTMethod) and method.config == CAPTConfig()
    assert cfg.task_options == {"mlm_probability": 0.15}
    assert (cfg.model.model_name_or_path, cfg.data.data, cfg.model.max_length) == ("minilm", "builtin-text", 64)
    t = cfg.training
    assert (t.max_steps, t.per_device_train_batch_size, t.learning_rate, t.seed, t.bf16) == (1000, 32, 5e-5, 42, True)
    assert t.get_warmup_steps(t.max_steps) == 60  # warmup_steps 0.06: a share of the steps


def test_the_config_has_the_reproduction_scripts_pretraining_settings():
    """The file says it holds benchmarks/reproduce.py's settings for the capt run: the same parsed experiment."""
    repro = _reproduce_module()
    flags = repro.pretrain_flags("capt", 1000, "minilm", smoke=False)
    script, file = parse_experiment(flags), parse_experiment([str(CONFIG)])
    assert (script.method_name, script.task_name) == (file.method_name, file.task_name)
    assert CAPTConfig(**script.method_options) == CAPTConfig(**file.method_options)
    assert script.task_options.get("mlm_probability", 0.15) == file.task_options["mlm_probability"]
    assert (script.model.model_name_or_path, script.model.max_length, script.data.data) == (
        file.model.model_name_or_path, file.model.max_length, file.data.data)
    for name in ("max_steps", "per_device_train_batch_size", "per_device_eval_batch_size", "learning_rate",
                 "warmup_steps", "weight_decay", "bf16", "seed"):
        assert getattr(script.training, name) == getattr(file.training, name), name


def test_plmkit_train_runs_the_shipped_config(corpus, tmp_path):
    """`plmkit train CONFIG` with flags that shorten it: the run folder records the config's method options and
    task, the capt term is logged and the geometry of z reported (bf16 autocast as the file asks)."""
    out = tmp_path / "run"
    argv = ["train", str(CONFIG), *corpus_flags(corpus), *TINY, "--output_dir", str(out), "--max_steps", "6",
            "--per_device_train_batch_size", "8", "--logging_steps", "3", "--method.geometry_batches", "1"]
    assert main(argv) == 0
    saved = yaml.safe_load((out / "plmkit_config.yaml").read_text())
    assert saved["method"] == {**yaml.safe_load(CONFIG.read_text())["method"], "geometry_batches": 1}
    assert saved["task"]["name"] == "masked_lm" and saved["task"]["mlm_probability"] == 0.15
    assert saved["bf16"] is True and saved["data"] is None  # --train_file replaced the file's builtin data
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    capt = [h["loss/capt"] for h in history if "loss/capt" in h]
    assert len(capt) == 2 and all(0 < v < 10 for v in capt)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["capt_geometry"][-1]["step"] == 6 and 0 <= metrics["capt_alignment"] <= 4


def test_a_bad_option_in_a_config_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(CONFIG.read_text().replace("temperature: 0.1", "temperature: 0"))
    assert main(["train", str(config), *TINY, "--output_dir", str(tmp_path / "run")]) == 2
    assert "temperature must be > 0, got 0" in capsys.readouterr().err



def test_the_python_api_of_the_readme(corpus, tmp_path):
    """The README's Python usage: parse_experiment + train with --method capt, then the geometry of z in the metrics."""
    from plmkit.core.run import train

    metrics = train(parse_experiment(["--task", "masked_lm", "--train_file", str(corpus["train"]), *TINY,
                                      "--output_dir", str(tmp_path / "run"), "--max_steps", "2",
                                      "--per_device_train_batch_size", "8", "--save_strategy", "no",
                                      "--method", "capt"]))
    assert 0 <= metrics["capt_alignment"] <= 4 and metrics["capt_uniformity"] <= 0
    assert metrics["capt_geometry"][-1]["step"] == 2
