"""Child-Tuning_D under two-process DDP (torchrun, gloo): the same Fisher mask as one process."""

import os
import subprocess
import sys

import pytest
import torch

from plmkit.core.testing import free_port, write_toy_files
from plmkit.core.training import load_method_state

pytestmark = pytest.mark.ddp

FLAGS = ["--model_name_or_path", "tiny-bert", "--report_to", "none", "--disable_tqdm", "true",
         "--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0", "--max_steps", "1",
         "--save_strategy", "steps", "--save_steps", "1", "--seed", "5",
         "--method", "child_tuning", "--method.mode", "D", "--method.reserve_p", "0.3"]


def _mask(cmd_prefix, out, data, batch):
    env = {**os.environ, "PLMKIT_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [*cmd_prefix, "-m", "plmkit.core.cli", "train", *FLAGS, *data, "--output_dir", str(out),
           "--per_device_train_batch_size", str(batch)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_method_state(out / "checkpoint-1")
    return {k: v.bool() for k, v in state.items() if k.startswith("mask.")}


def test_two_processes_compute_the_single_process_mask(tmp_path):
    """Each process scores its half of the Fisher batches (whole batches of the global size, as a single process with
    the same global batch reads them); the summed scores give every process, and the checkpoint, the single-process
    mask."""
    paths = write_toy_files(tmp_path / "data", n_train=44)  # 6 batches of 8: the processes get 3 each
    data = [flag for split, path in paths.items() for flag in (f"--{split}_file", str(path))]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    ddp = _mask(torchrun, tmp_path / "ddp", [*data, "--ddp_backend", "gloo"], 4)
    single = _mask([sys.executable], tmp_path / "single", data, 8)
    assert ddp and ddp.keys() == single.keys()
    assert all(torch.equal(ddp[k], single[k]) for k in single)
