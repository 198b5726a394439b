"""Shared fixtures: one thread (the machine is shared), the tiny task as jsonl files for the CLI, and a teacher
fine-tuned on it once."""

from __future__ import annotations

import pytest
import torch

from plmkit.core.cli import main
from plmkit.core.testing import write_toy_files


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    return write_toy_files(tmp_path_factory.mktemp("data"), 64, 16, fmt="jsonl")


@pytest.fixture(scope="session")
def teacher(files, tmp_path_factory):
    """A plain fine-tuning run of tiny-bert on the toy task (what --method.teacher takes)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    argv = ["train", "--train_file", str(files["train"]), "--output_dir", str(out), "--model_name_or_path", "tiny-bert",
            "--num_train_epochs", "4", "--per_device_train_batch_size", "16", "--learning_rate", "1e-3",
            "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--num_threads", "1",
            "--warmup_steps", "1", "--method", "finetune"]
    assert main(argv) == 0
    return out
