"""Representation banks: compact storage, memory report, disk storage, and what a checkpoint keeps of them."""

from __future__ import annotations

import pytest
import torch

from plmkit.cap import RepresentationBank
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
    bank = RepresentationBank("finetuned", 20, 8, torch.float16, tmp_path)
    reps = torch.randn(20, 8)
    bank.append(reps)
    assert (tmp_path / "finetuned-0.bin").stat().st_size == 20 * 8 * 2
    assert "disk" in bank.memory()["storage"]
    torch.testing.assert_close(bank.gather(torch.arange(20))[:, 0].float(), reps, atol=1e-2, rtol=1e-3)


def test_bank_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="expected"):
        RepresentationBank("x", 5, 4).append(torch.zeros(4, 4))


def test_banks_are_rebuilt_from_their_checkpoint_state(tmp_path):
    memory, disk = RepresentationBank("pretrained", 6, 4), RepresentationBank("snapshots", 6, 4, directory=tmp_path)
    for bank in (memory, disk):
        bank.append(torch.randn(6, 4))
        bank.append(torch.randn(6, 4))
    again = RepresentationBank.from_state(memory.state(), list(memory.entries))
    reopened = RepresentationBank.from_state(disk.state())
    rows = torch.tensor([5, 0, 2])
    assert torch.equal(again.gather(rows), memory.gather(rows)) and torch.equal(reopened.gather(rows), disk.gather(rows))
    reopened.append(torch.zeros(6, 4))  # a resumed run appends after the entries it reopened
    assert len(reopened) == 3 and (tmp_path / "snapshots-2.bin").exists()
    with pytest.raises(MethodError, match="holds 1 of its 2"):
        RepresentationBank.from_state(memory.state(), memory.entries[:1])
    (tmp_path / "snapshots-1.bin").unlink()
    with pytest.raises(MethodError, match="missing or short"):
        RepresentationBank.from_state(disk.state())
