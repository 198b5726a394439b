"""`plmkit train --task masked_lm ... --method capt` end to end on tiny-bert: the logged terms, the run folder with
its projection head, export, and fine-tuning from the folder as plain sequence classification."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

from plmkit.capt import PROJECTION
from plmkit.core.cli import main
from plmkit.core.run import export_run, load_run
from plmkit.core.testing import write_toy_files

from .conftest import TINY


@pytest.fixture(scope="module")
def run_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("capt_cli") / "run"
    argv = ["train", "--task", "masked_lm", "--train_file", str(corpus["train"]), *TINY, "--output_dir", str(out),
            "--max_steps", "12", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
            "--logging_steps", "4", "--save_strategy", "steps", "--save_steps", "6", "--method", "capt",
            "--method.projection_size", "16", "--method.queue_size", "12", "--method.geometry_batches", "2"]
    assert main(argv) == 0
    return out


def test_cli_run_logs_the_capt_term_and_reports_the_geometry(run_dir):
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    logged = [h for h in history if "loss/capt" in h]
    assert len(logged) == 3 and all("loss/task" in h for h in logged)
    assert all(h["loss"] == pytest.approx(h["loss/task"] + h["loss/capt"], rel=1e-4) for h in logged)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["capt_alignment"] <= 4.0 and metrics["capt_uniformity"] <= 0.0
    assert metrics["capt_geometry"][-1]["step"] == 12 and metrics["capt_geometry"][-1]["examples"] > 0
    assert "capt_train_alignment" in metrics and metrics["capt_queue_filled"] == 12
    assert "eval_masked_accuracy" in metrics


def test_the_projection_head_is_saved_and_reloaded(run_dir):
    saved = load_file(str(run_dir / "model.safetensors"))
    keys = [k for k in saved if k.startswith(f"{PROJECTION}.")]
    assert keys and saved[f"{PROJECTION}.out.weight"].shape == (16, 32)
    model, _, method, _ = load_run(run_dir)
    for key in keys:
        torch.testing.assert_close(model.state_dict()[key], saved[key], rtol=0, atol=0)
    assert method.head is getattr(model, PROJECTION)


def test_checkpoints_carry_the_queue(run_dir):
    state = load_file(str(run_dir / "checkpoint-6" / "method_state.safetensors"))
    assert state["queue"].shape == (12, 16)
    meta = json.loads((run_dir / "checkpoint-6" / "method_state.json").read_text())
    assert meta["queue_count"] == 12 and meta["train_sums"]["batches"] == 6


def test_export_is_a_plain_masked_lm_with_the_same_outputs(run_dir, tmp_path):
    model, tokenizer, _, _ = load_run(run_dir)
    batch = dict(tokenizer(["a good film", "the worst story of it"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        expected = model(**batch).logits
    assert main(["export", str(run_dir), "--output_dir", str(tmp_path / "plain")]) == 0
    assert not any(k.startswith(PROJECTION) for k in load_file(str(tmp_path / "plain" / "model.safetensors")))
    plain, info = AutoModelForMaskedLM.from_pretrained(tmp_path / "plain", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**batch).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("exported", [True, False], ids=["export", "run-folder"])
def test_fine_tuning_afterwards_is_plain_plmkit_train(run_dir, exported, tmp_path):
    """The encoder CAPT trained loads for sequence classification, from the export or straight from the run folder
    (its MLM and projection heads are simply not used)."""
    source = export_run(run_dir, tmp_path / "plain") if exported else run_dir
    classifier = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    saved = load_file(str(run_dir / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(classifier.state_dict()[key], saved[key], rtol=0, atol=0)
    data = write_toy_files(tmp_path / "cls", 32, 16)
    out = tmp_path / "finetuned"
    argv = ["train", "--model_name_or_path", str(source), "--train_file", str(data["train"]),
            "--validation_file", str(data["validation"]), "--output_dir", str(out), "--report_to", "none",
            "--disable_tqdm", "true", "--num_threads", "1", "--save_strategy", "no", "--max_steps", "4",
            "--per_device_train_batch_size", "8"]
    assert main(argv) == 0
    assert "eval_accuracy" in json.loads((out / "metrics.json").read_text())


def test_a_batch_of_one_ends_with_one_clear_line(corpus, tmp_path, capsys):
    argv = ["train", "--task", "masked_lm", "--train_file", str(corpus["train"]), *TINY,
            "--output_dir", str(tmp_path / "run"), "--max_steps", "2", "--per_device_train_batch_size", "1",
            "--save_strategy", "no", "--method", "capt"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "plmkit: error: capt needs at least 2 examples per batch" in err and "got batch size 1" in err


def test_capt_on_a_classification_task_is_refused(tmp_path, capsys):
    data = write_toy_files(tmp_path / "cls", 16, 8)
    argv = ["train", "--train_file", str(data["train"]), *TINY, "--output_dir", str(tmp_path / "run"),
            "--max_steps", "2", "--save_strategy", "no", "--method", "capt"]
    assert main(argv) == 2
    assert "it runs on task masked_lm" in capsys.readouterr().err

