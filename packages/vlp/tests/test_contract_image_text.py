"""The contract kit's checks for the semvlp method, on the image_text task.

The kit (plmkit.core.testing.contract) writes the toy text-classification files and a text-only batch; until it can
take a task's data and batch from the case, these tests swap its two data helpers for image-text ones (a tiny
coloured-shapes data set, a batch with pixels) and run its checks unchanged with `CONTRACT_CASE` on a tiny SemVLP
model folder."""

import dataclasses

import pytest
import torch

import plmkit.core.testing.contract as kit
from plmkit.vlp.method import CONTRACT_CASE
from plmkit.vlp.testing import data_flags, tiny_folder, write_image_text


@pytest.fixture
def case(tmp_path, monkeypatch):
    folder = tiny_folder(tmp_path / "semvlp")
    monkeypatch.setattr(kit, "_data", lambda root: data_flags(write_image_text(root, n_val=8, n_test=8)))

    def batch(processor):
        enc = dict(processor(["a red square", "a blue dot", "a grey bar"], padding=True, return_tensors="pt"))
        torch.manual_seed(0)
        return {**enc, "pixel_values": torch.randn(3, 3, 64, 64)}

    monkeypatch.setattr(kit, "_batch", batch)
    return dataclasses.replace(CONTRACT_CASE, model=str(folder))


def test_save_reload(case, tmp_path):
    kit.check_save_reload(case, tmp_path)


def test_resume_equals_an_uninterrupted_run(case, tmp_path):
    kit.check_resume(case, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_checkpoints_train(case, dtype, tmp_path):
    kit.check_half_precision_checkpoint(case, tmp_path, dtype)


@pytest.mark.ddp
def test_two_processes_match_one(case, tmp_path):
    kit.check_ddp(case, tmp_path)
