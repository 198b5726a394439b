"""End to end through `plmkit train`, reloading with load_run, and exporting at any sparsity."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from plmkit.core.cli import main
from plmkit.core.run import evaluate_run, load_run
from plmkit.core.sparsity import load_compacted
from plmkit.core.testing import write_toy_files
from plmkit.structured_pruning import export_at, load_at


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_toy_files(tmp_path_factory.mktemp("data"), 64, 16, fmt="jsonl")


def _train(files, out, *method_flags):
    argv = ["train", "--model_name_or_path", "tiny-bert", "--train_file", str(files["train"]),
            "--validation_file", str(files["validation"]), "--test_file", str(files["test"]),
            "--num_train_epochs", "2", "--per_device_train_batch_size", "16", "--learning_rate", "1e-3",
            "--output_dir", str(out), "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
            "--num_threads", "1", *method_flags]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_structured_pruning_cli_save_and_reload_identical(files, tmp_path):
    metrics = _train(files, tmp_path / "run", "--method", "structured_pruning", "--method.algorithm", "movement",
                     "--method.sparsity", "0.5")
    model, _, method, _ = load_run(tmp_path / "run")
    assert method.unit_gates.head_mask.sum() == 4 and method.unit_gates.neuron_mask.sum() == 64
    again = evaluate_run(tmp_path / "run", "test")
    assert again["test_loss"] == pytest.approx(metrics["test_loss"], abs=1e-6)
    assert main(["export", str(tmp_path / "run"), "--output_dir", str(tmp_path / "exported")]) == 0
    exported = load_compacted(AutoModelForSequenceClassification, tmp_path / "exported")
    ids = torch.randint(5, 100, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_dynamic_sparsification_cli_then_export_at_any_sparsity(files, tmp_path):
    _train(files, tmp_path / "ds", "--method", "dynamic_sparsification", "--method.sparsity", "0.5")
    ids = torch.randint(5, 100, (2, 7))
    for sparsity in (0.25, 0.75):
        gated, _, _ = load_at(tmp_path / "ds", sparsity)
        if sparsity == 0.25:
            export_at(tmp_path / "ds", sparsity, tmp_path / f"export-{sparsity}")
        else:
            assert main(["export", str(tmp_path / "ds"), "--output_dir", str(tmp_path / f"export-{sparsity}"),
                         "--method.sparsity", str(sparsity)]) == 0
        compacted = load_compacted(AutoModelForSequenceClassification, tmp_path / f"export-{sparsity}")
        assert sum(compacted.config.plmkit_compaction["intermediate_sizes"]) == 2 * (64 - int(sparsity * 64))
        with torch.no_grad():
            torch.testing.assert_close(compacted(input_ids=ids).logits, gated(input_ids=ids).logits,
                                       atol=1e-5, rtol=0)


def test_cli_reports_bad_option(files, tmp_path, capsys):
    assert main(["train", "--model_name_or_path", "tiny-bert", "--train_file", str(files["train"]),
                 "--output_dir", str(tmp_path / "bad"), "--method", "structured_pruning",
                 "--method.algorithm", "magnitude"]) == 2
    assert "algorithm must be one of" in capsys.readouterr().err


@pytest.mark.slow
def test_minilm_rt_polarity_smoke(tmp_path):
    argv = ["train", "--model_name_or_path", "minilm", "--data", "rt-polarity", "--max_steps", "30",
            "--max_eval_samples", "200", "--max_length", "64", "--per_device_train_batch_size", "16",
            "--output_dir", str(tmp_path / "minilm"), "--report_to", "none", "--save_strategy", "no",
            "--disable_tqdm", "true", "--method", "structured_pruning", "--method.sparsity", "0.5",
            "--method.importance_batches", "4"]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "minilm" / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    model, _, method, _ = load_run(tmp_path / "minilm")
    assert method.unit_gates.head_mask.sum() == 6 * 6  # 12 heads per layer, half kept
