"""End to end on real data: the real MiniLM on rt-polarity through the `plmkit` CLI, then eval and export."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from plmkit.core.cli import main
from plmkit.core.run import load_run
from plmkit.core.testing import bf16_flags

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "run"
    argv = [
        "train", "--model_name_or_path", "minilm", "--data", "rt-polarity", "--max_length", "48",
        "--max_steps", "40", "--per_device_train_batch_size", "16", "--learning_rate", "1e-4", *bf16_flags(),
        "--max_eval_samples", "256", "--per_device_eval_batch_size", "64", "--logging_steps", "10",
        "--save_strategy", "no", "--disable_tqdm", "true", "--output_dir", str(out),
    ]
    assert main(argv) == 0
    return out


def test_run_folder_has_config_metrics_weights_and_logs(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {"plmkit_config.yaml", "metrics.json", "model.safetensors", "config.json", "tokenizer.json", "runs"} <= names
    assert list((run_dir / "runs").rglob("events.out.tfevents.*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"train_loss", "eval_accuracy", "test_accuracy", "eval_loss", "test_loss"} <= set(metrics)
    # 40 steps of 16 sentences already move MiniLM well above chance (0.5) on held-out sentences.
    assert metrics["test_accuracy"] > 0.65, metrics


def test_eval_command_reproduces_the_test_metrics(run_dir, capsys):
    assert main(["eval", str(run_dir), "--split", "test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert printed["test_accuracy"] == pytest.approx(saved["test_accuracy"], abs=1e-9)


def test_export_loads_in_plain_transformers(run_dir, tmp_path):
    assert main(["export", str(run_dir), "--output_dir", str(tmp_path / "exported")]) == 0
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "exported").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "exported")
    model, _, _, _ = load_run(run_dir)
    batch = tok(["A gorgeous, witty film.", "Dull and lifeless."], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(plain(**batch).logits, model(**batch).logits, atol=1e-6)
    assert plain.config.id2label == {0: "negative", 1: "positive"}


def test_console_script_lists_methods():
    exe = [sys.executable, "-m", "plmkit.core.cli"]
    out = subprocess.run([*exe, "methods"], capture_output=True, text=True, check=True).stdout
    assert "finetune: Plain full fine-tuning" in out and "pruning: Magnitude (MaP)" in out
    out = subprocess.run([*exe, "data", "list"], capture_output=True, text=True, check=True).stdout
    assert "rt-polarity" in out and "trec" in out
