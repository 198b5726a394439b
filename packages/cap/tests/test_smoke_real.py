"""CAP-m's mechanics on the real MiniLM and real data (rt-polarity): teacher fine-tuned first, banks filled, every
matrix pruned to 50%, the run saved and reloaded. A few steps only: that CAP's defaults learn is asserted by the
contract kit's `test_default_options_learn_trec[cap]` (MiniLM on trec, beats the majority class by 20 points)."""

from __future__ import annotations

import json

import pytest

from plmkit.core.cli import main
from plmkit.core.data import load_builtin
from plmkit.core.run import load_run
from plmkit.core.sparsity import masked_layers


@pytest.mark.slow
def test_cap_m_minilm_rt_polarity_mechanics(tmp_path):
    # The builtin train split is stored positives first: take shuffled subsets.
    splits = load_builtin("rt-polarity").splits
    splits["train"].shuffle(seed=0).select(range(64)).to_json(str(tmp_path / "train.jsonl"))
    splits["test"].shuffle(seed=0).select(range(32)).to_json(str(tmp_path / "test.jsonl"))
    out = tmp_path / "run"
    argv = ["train", "--model_name_or_path", "minilm", "--train_file", str(tmp_path / "train.jsonl"),
            "--test_file", str(tmp_path / "test.jsonl"), "--max_length", "32", "--per_device_train_batch_size", "32",
            "--num_train_epochs", "3", "--learning_rate", "1e-4", "--output_dir", str(out),
            "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--num_threads", "1",
            "--method", "cap", "--method.engine", "cap-m", "--method.sparsity", "0.5", "--method.teacher_epochs", "1",
            "--method.min_steps", "0"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    banks = metrics["cap_banks"]
    assert banks["snapshots"]["representations"] == 2 and banks["finetuned"]["ratio_vs_fp32"] == 0.5
    assert metrics["masked_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert (out / "teacher" / "config.json").exists()
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    model, _, _, _ = load_run(out)
    assert all(layer.sparsity == pytest.approx(0.5, abs=1e-3) for _, layer in masked_layers(model))
