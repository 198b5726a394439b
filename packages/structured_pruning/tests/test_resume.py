"""A structured_pruning run interrupted after a pruning event and resumed from its checkpoint ends exactly where
the uninterrupted run ends (same weights, masks and metrics), without repeating the pruning event."""

import json

import pytest
import torch
from safetensors.torch import load_file

import plmkit.structured_pruning.method as sp_method
from plmkit.core.cli import main
from plmkit.core.testing import write_toy_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_toy_files(tmp_path_factory.mktemp("data"), 64, 16, fmt="jsonl")


def _train(files, out, *flags):
    # 4 steps per epoch, 12 in all; iterative first-order prunes at steps 2 and 8; checkpoints every 5 steps.
    argv = ["train", "--model_name_or_path", "tiny-bert", "--train_file", str(files["train"]),
            "--validation_file", str(files["validation"]), "--num_train_epochs", "3",
            "--per_device_train_batch_size", "16", "--learning_rate", "1e-2", "--warmup_steps", "1",
            "--output_dir", str(out), "--report_to", "none", "--disable_tqdm", "true", "--num_threads", "1",
            "--save_strategy", "steps", "--save_steps", "5", "--method", "structured_pruning",
            "--method.algorithm", "first_order", "--method.iterations", "2", "--method.sparsity", "0.5",
            "--method.importance_batches", "2", *flags]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_first_order_resume_is_exact_and_does_not_replay_pruning(files, tmp_path, monkeypatch):
    passes = []
    measure = sp_method.unit_importance

    def spy(ctx, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        passes.append(ctx.global_step)
        return measure(ctx, *args, **kwargs)

    monkeypatch.setattr(sp_method, "unit_importance", spy)
    full = _train(files, tmp_path / "full")
    assert passes == [2, 8]
    passes.clear()
    resumed = _train(files, tmp_path / "resumed", "--resume_from_checkpoint", str(tmp_path / "full" / "checkpoint-5"))
    assert passes == [8]  # the step-2 event is in the checkpoint's masks and state, not measured again
    assert resumed["eval_loss"] == full["eval_loss"] and resumed["eval_accuracy"] == full["eval_accuracy"]
    assert resumed["head_sparsity"] == full["head_sparsity"] == 0.5
    weights, again = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert weights.keys() == again.keys() and "unit_gates.head_mask" in weights
    for name, value in weights.items():
        assert torch.equal(value, again[name]), name
