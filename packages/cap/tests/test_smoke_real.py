"""A short CAP-m run of MiniLM on rt-polarity (real model, real data): teacher, banks, pruning, evaluation.

30 steps are too few for movement pruning to recover accuracy (scores start equal, so the first masks are
arbitrary): the test checks the mechanics, not the accuracy."""

from __future__ import annotations

import json

import pytest

from plmkit.core.cli import main
from plmkit.core.data import load_builtin
from plmkit.core.run import load_run
from plmkit.core.sparsity import masked_layers


@pytest.mark.slow
def test_cap_m_minilm_rt_polarity(tmp_path):
    # The builtin train split is stored positives first: take a shuffled subset.
    splits = load_builtin("rt-polarity").splits
    splits["train"].shuffle(seed=0).select(range(320)).to_json(str(tmp_path / "train.jsonl"))
    splits["test"].shuffle(seed=0).select(range(200)).to_json(str(tmp_path / "test.jsonl"))
    out = tmp_path / "run"
    argv = ["train", "--model_name_or_path", "minilm", "--train_file", str(tmp_path / "train.jsonl"),
            "--test_file", str(tmp_path / "test.jsonl"), "--max_length", "64", "--per_device_train_batch_size", "32",
            "--num_train_epochs", "3", "--learning_rate", "1e-4", "--warmup_steps", "3", "--output_dir", str(out),
            "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--num_threads", "1",
            "--method", "cap", "--method.engine", "cap-m", "--method.sparsity", "0.5", "--method.teacher_epochs", "2",
            "--method.initial_warmup", "1", "--method.final_warmup", "1", "--method.ce_weight", "1"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    banks = json.loads((out / "cap_banks.json").read_text())
    assert banks["snapshots"]["representations"] == 2 and banks["finetuned"]["ratio_vs_fp32"] == 0.5
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert (out / "teacher" / "config.json").exists()
    model, _, _, _ = load_run(out)
    assert all(layer.sparsity == pytest.approx(0.5, abs=1e-3) for _, layer in masked_layers(model))
