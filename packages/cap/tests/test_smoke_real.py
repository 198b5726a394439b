"""A short CAP-m run of MiniLM on rt-polarity (real model, real data): teacher fine-tuned first, banks, pruning to
50% per matrix, evaluation. Movement scores start at |W| (the first masks are magnitude pruning's), so the pruned
model learns within this budget: its test accuracy must beat the majority class of the test subset."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from plmkit.core.cli import main
from plmkit.core.data import load_builtin
from plmkit.core.run import load_run
from plmkit.core.sparsity import masked_layers


@pytest.mark.slow
def test_cap_m_minilm_rt_polarity_learns(tmp_path):
    # The builtin train split is stored positives first: take shuffled subsets.
    splits = load_builtin("rt-polarity").splits
    splits["train"].shuffle(seed=0).select(range(320)).to_json(str(tmp_path / "train.jsonl"))
    test = splits["test"].shuffle(seed=0).select(range(200))
    test.to_json(str(tmp_path / "test.jsonl"))
    majority = max(Counter(test["label"]).values()) / len(test)
    out = tmp_path / "run"
    argv = ["train", "--model_name_or_path", "minilm", "--train_file", str(tmp_path / "train.jsonl"),
            "--test_file", str(tmp_path / "test.jsonl"), "--max_length", "64", "--per_device_train_batch_size", "32",
            "--num_train_epochs", "3", "--learning_rate", "1e-4", "--warmup_steps", "3", "--output_dir", str(out),
            "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--num_threads", "1",
            "--method", "cap", "--method.engine", "cap-m", "--method.sparsity", "0.5", "--method.teacher_epochs", "2"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    banks = metrics["cap_banks"]
    assert banks["snapshots"]["representations"] == 2 and banks["finetuned"]["ratio_vs_fp32"] == 0.5
    assert metrics["masked_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert (out / "teacher" / "config.json").exists()
    assert metrics["test_accuracy"] > majority + 0.05, (metrics["test_accuracy"], majority)
    model, _, _, _ = load_run(out)
    assert all(layer.sparsity == pytest.approx(0.5, abs=1e-3) for _, layer in masked_layers(model))
