"""CP-Tuning's anchors under two-process DDP (torchrun, gloo) are those of one process: each process encodes its
shard of the training set, `ctx.all_gather` joins them, and they are ordered by example id."""

import json

import pytest
import torch
from safetensors.torch import load_file

from plmkit.core.testing import run_cli, write_toy_files

pytestmark = pytest.mark.ddp


def _train(processes, out, data, batch, *extra):
    files = [flag for split, path in data.items() for flag in (f"--{split}_file", str(path))]
    # Learning rate 0: both runs keep the initial weights (their class-balanced batches differ), so their anchors
    # must agree wherever the training set was encoded.
    run_cli(["train", "--model_name_or_path", "tiny-bert", *files,
             "--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0,initializer_range=0.5",
             "--method", "cp_tuning", "--per_device_train_batch_size", str(batch), "--per_device_eval_batch_size", "5",
             "--max_steps", "2", "--learning_rate", "0", "--eval_strategy", "steps", "--eval_steps", "1",
             "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--output_dir", str(out),
             "--num_threads", "1", *extra], processes)
    return load_file(str(out / "model.safetensors")), json.loads((out / "metrics.json").read_text())


def test_two_processes_take_the_anchors_of_one(tmp_path):
    data = write_toy_files(tmp_path / "data", n_train=37, n_eval=16)  # 37: the two shards differ in size
    ddp, ddp_metrics = _train(2, tmp_path / "ddp", data, 4, "--ddp_backend", "gloo")
    single, single_metrics = _train(1, tmp_path / "single", data, 8)
    assert torch.equal(ddp["anchor_ids"], torch.arange(37)) and torch.equal(single["anchor_ids"], torch.arange(37))
    assert torch.equal(ddp["anchor_labels"], single["anchor_labels"])
    torch.testing.assert_close(ddp["anchor_features"], single["anchor_features"], atol=1e-5, rtol=0)
    assert ddp_metrics["test_accuracy"] == pytest.approx(single_metrics["test_accuracy"])
