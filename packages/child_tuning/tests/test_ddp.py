"""Child-Tuning_D under two-process DDP (torchrun, gloo): the same Fisher mask as one process."""

import pytest
import torch

from plmkit.core.testing import run_cli, write_toy_files
from plmkit.core.training import load_method_state

pytestmark = pytest.mark.ddp

FLAGS = ["--model_name_or_path", "tiny-bert", "--report_to", "none", "--disable_tqdm", "true",
         "--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0", "--max_steps", "1",
         "--save_strategy", "steps", "--save_steps", "1", "--seed", "5",
         "--method", "child_tuning", "--method.mode", "D", "--method.reserve_p", "0.3"]


def _mask(processes, out, data, batch):
    run_cli(["train", *FLAGS, *data, "--output_dir", str(out), "--per_device_train_batch_size", str(batch),
             "--num_threads", "1"], processes)
    state = load_method_state(out / "checkpoint-1")
    return {k: v.bool() for k, v in state.items() if k.startswith("mask.")}


def test_two_processes_compute_the_single_process_mask(tmp_path):
    """Each process scores its half of the Fisher batches (whole batches of the global size, as a single process with
    the same global batch reads them); the summed scores give every process, and the checkpoint, the single-process
    mask."""
    paths = write_toy_files(tmp_path / "data", n_train=44)  # 6 batches of 8: the processes get 3 each
    data = [flag for split, path in paths.items() for flag in (f"--{split}_file", str(path))]
    ddp = _mask(2, tmp_path / "ddp", [*data, "--ddp_backend", "gloo"], 4)
    single = _mask(1, tmp_path / "single", data, 8)
    assert ddp and ddp.keys() == single.keys()
    assert all(torch.equal(ddp[k], single[k]) for k in single)
