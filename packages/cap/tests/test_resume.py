"""CAP runs interrupted mid-training and resumed from their checkpoint end exactly where the uninterrupted runs
end (same weights and metrics): the banks, the candidates' generator, the snapshots and pruning iterations done
and the teacher come from the checkpoint, nothing is rebuilt from trained weights or replayed."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

import plmkit.cap.method as cap_method
from plmkit.cap import CAPMethod
from plmkit.core.cli import main

# 64 examples, batch 16: 4 steps per epoch, 16 in all; a checkpoint every 6 steps (mid-epoch).
COMMON = ["--model_name_or_path", "tiny-bert", "--num_train_epochs", "4", "--per_device_train_batch_size", "16",
          "--learning_rate", "1e-3", "--report_to", "none", "--disable_tqdm", "true", "--num_threads", "1",
          "--warmup_steps", "1", "--save_strategy", "steps", "--save_steps", "6", "--method", "cap",
          "--method.min_steps", "0"]


def _train(files, out, *flags):
    argv = ["train", "--train_file", str(files["train"]), "--validation_file", str(files["validation"]),
            "--output_dir", str(out), *COMMON, *flags]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def _assert_same_run(first, second, metrics, again):
    assert again["eval_loss"] == metrics["eval_loss"] and again["eval_accuracy"] == metrics["eval_accuracy"]
    assert again["cap_banks"] == metrics["cap_banks"]
    weights, resumed = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert weights.keys() == resumed.keys()
    for name, value in weights.items():
        assert torch.equal(value, resumed[name]), name


def test_cap_m_resume_is_exact(files, tmp_path, monkeypatch):
    snapshots, teachers = [], []
    snapshot, finetune = CAPMethod.snapshot, cap_method.finetune_teacher

    def spy_snapshot(self, ctx, first):  # noqa: ANN001, ANN202
        snapshots.append(first)
        return snapshot(self, ctx, first)

    def spy_finetune(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        teachers.append(args[-1])
        return finetune(*args, **kwargs)

    monkeypatch.setattr(CAPMethod, "snapshot", spy_snapshot)
    monkeypatch.setattr(cap_method, "finetune_teacher", spy_finetune)
    flags = ["--method.engine", "cap-m", "--method.sparsity", "0.5", "--method.teacher_epochs", "1"]
    metrics = _train(files, tmp_path / "full", *flags)
    assert snapshots == [True, False, False, False] and len(teachers) == 1
    snapshots.clear()
    again = _train(files, tmp_path / "resumed", *flags, "--resume_from_checkpoint", str(tmp_path / "full" / "checkpoint-6"))
    # Resumed inside epoch 1: PrC and the epoch-1 snapshot come from the checkpoint, the teacher from its folder.
    assert snapshots == [False, False] and len(teachers) == 1
    assert again["masked_sparsity"] == metrics["masked_sparsity"]
    _assert_same_run(tmp_path / "full", tmp_path / "resumed", metrics, again)


def test_cap_f_resume_is_exact(files, teacher, tmp_path, monkeypatch):
    iterations = []
    prune = CAPMethod.prune_iteration

    def spy(self, ctx, iteration, sparsity):  # noqa: ANN001, ANN202
        iterations.append((ctx.global_step, iteration))
        return prune(self, ctx, iteration, sparsity)

    monkeypatch.setattr(CAPMethod, "prune_iteration", spy)
    # Three iterations (25%, 50%, 75%) at steps 0, 5 and 10; disk banks in the run folder.
    flags = ["--method.engine", "cap-f", "--method.sparsity", "0.75", "--method.pruning_step", "0.25",
             "--method.teacher", str(teacher), "--method.bank_storage", "disk"]
    metrics = _train(files, tmp_path / "full", *flags)
    assert iterations == [(0, 0), (5, 1), (10, 2)] and (tmp_path / "full" / "cap_banks" / "snapshots-1.bin").exists()
    iterations.clear()
    again = _train(files, tmp_path / "resumed", *flags, "--resume_from_checkpoint", str(tmp_path / "full" / "checkpoint-6"))
    assert iterations == [(10, 2)]  # iterations 0 and 1 are in the checkpoint's masks and state
    assert again["cap_f_pruning"] == metrics["cap_f_pruning"] and again["head_sparsity"] == 0.75
    _assert_same_run(tmp_path / "full", tmp_path / "resumed", metrics, again)
