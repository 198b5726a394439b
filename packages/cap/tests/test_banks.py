"""Representation banks: compact storage, memory report, disk storage, example lookup."""

from __future__ import annotations

import pytest
import torch

from plmkit.cap import ExampleIndex, RepresentationBank
from plmkit.core.training import MethodError


def test_fp16_bank_halves_fp32_storage_and_reports_it():
    bank = RepresentationBank("snapshots", 50, 16)
    reps = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)
    bank.append(reps)
    bank.append(reps * 0.5)
    assert bank.entries[0].dtype == torch.float16 and len(bank) == 2
    report = bank.memory()
    assert report["bytes"] == 2 * 50 * 16 * 2 and report["ratio_vs_fp32"] == 0.5
    gathered = bank.gather(torch.tensor([3, 7]))
    assert gathered.shape == (2, 2, 16)
    torch.testing.assert_close(gathered[:, 0].float(), reps[[3, 7]], atol=1e-3, rtol=0)


def test_disk_bank_round_trips(tmp_path):
    bank = RepresentationBank.on_disk("finetuned", 20, 8, torch.float16, tmp_path)
    reps = torch.randn(20, 8)
    bank.append(reps)
    assert (tmp_path / "finetuned-0.bin").stat().st_size == 20 * 8 * 2
    assert "disk" in bank.memory()["storage"]
    torch.testing.assert_close(bank.gather(torch.arange(20))[:, 0].float(), reps, atol=1e-2, rtol=1e-3)


def test_bank_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="expected"):
        RepresentationBank("x", 5, 4).append(torch.zeros(4, 4))


def test_example_index_finds_rows_under_padding_and_rejects_unknown_examples():
    index = ExampleIndex([[101, 5, 6, 102], [101, 7, 102], [101, 8, 9, 10, 102]])
    batch = {
        "input_ids": torch.tensor([[101, 8, 9, 10, 102], [101, 7, 102, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
    }
    assert index.lookup(batch).tolist() == [2, 1] and len(index) == 3
    with pytest.raises(MethodError, match="not in the training set"):
        index.lookup({"input_ids": torch.tensor([[101, 99, 102]]), "attention_mask": torch.ones(1, 3)})
