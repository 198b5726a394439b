"""Representation banks (Xu et al. 2022, Sec. 3 "memory banks"): R l2-normalised representations [N, H] of every
training example, one bank for PrC (the pre-trained model), FiC (the fine-tuned teacher) and SnC (one entry per
snapshot). They are computed without gradient and stored compactly on the CPU (float16 by default: half of fp32)
or as memory-mapped files on disk, and addressed by the core's ``example_id`` (the row of an example in the
training split).

A checkpoint carries the banks: in-memory entries as tensors, disk banks as what reopens their files
(``state()`` / ``from_state``), so a resumed run neither re-encodes them nor rebuilds PrC from trained weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from plmkit.core.training import MethodError

__all__ = ["DTYPES", "RepresentationBank"]

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class RepresentationBank:
    """R representations [N, H] per training example, stored in ``dtype`` (N x H per entry).

    ``directory`` set: each representation is a memory-mapped file there (RAM stays free for large N).
    """

    def __init__(
        self, name: str, num_examples: int, hidden_size: int, dtype: torch.dtype = torch.float16,
        directory: str | Path | None = None,
    ) -> None:
        self.name, self.num_examples, self.hidden_size, self.dtype = name, num_examples, hidden_size, dtype
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.entries: list[torch.Tensor] = []

    def __len__(self) -> int:
        """R, the number of representations per example."""
        return len(self.entries)

    def _path(self, index: int) -> Path:
        assert self.directory is not None
        return self.directory / f"{self.name}-{index}.bin"

    def _mapped(self, index: int) -> torch.Tensor:
        size = self.num_examples * self.hidden_size
        return torch.from_file(str(self._path(index)), shared=True, size=size, dtype=self.dtype).view(
            self.num_examples, self.hidden_size)

    def append(self, representations: torch.Tensor) -> None:
        """Store one representation of every example ([N, H], row i = example_id i)."""
        if tuple(representations.shape) != (self.num_examples, self.hidden_size):
            raise ValueError(
                f"bank {self.name}: expected [{self.num_examples}, {self.hidden_size}], got {tuple(representations.shape)}"
            )
        values = representations.detach().to("cpu", self.dtype)
        if self.directory is None:
            self.entries.append(values.contiguous())
            return
        mapped = self._mapped(len(self.entries))
        mapped.copy_(values)
        self.entries.append(mapped)

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """The stored representations of ``rows``: [len(rows), R, H] in the storage dtype."""
        rows = rows.cpu()
        return torch.stack([entry.index_select(0, rows) for entry in self.entries], dim=1)

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-able description; with the in-memory entries (``entries``) it rebuilds the bank."""
        return {"name": self.name, "num_examples": self.num_examples, "hidden_size": self.hidden_size,
                "dtype": str(self.dtype).removeprefix("torch."), "count": len(self),
                "directory": None if self.directory is None else str(self.directory)}

    @classmethod
    def from_state(cls, state: dict[str, Any], entries: list[torch.Tensor] | None = None) -> RepresentationBank:
        """The bank ``state()`` described: in memory from ``entries``, on disk by reopening its files."""
        bank = cls(state["name"], int(state["num_examples"]), int(state["hidden_size"]), DTYPES[state["dtype"]],
                   state["directory"])
        count = int(state["count"])
        if bank.directory is None:
            if entries is None or len(entries) != count:
                raise MethodError(f"bank {bank.name}: the checkpoint holds {0 if entries is None else len(entries)} "
                                  f"of its {count} representations")
            bank.entries = [e.to("cpu", bank.dtype).contiguous() for e in entries]
            return bank
        expected = bank.num_examples * bank.hidden_size * bank.dtype.itemsize
        for index in range(count):
            path = bank._path(index)
            if not path.is_file() or path.stat().st_size < expected:
                raise MethodError(f"bank {bank.name}: {path} is missing or short; the disk bank cannot be reopened "
                                  "to resume this run")
            bank.entries.append(bank._mapped(index))
        return bank

    # -- memory report ----------------------------------------------------------------------------------------------
    @property
    def bytes_per_representation(self) -> int:
        return self.num_examples * self.hidden_size * self.dtype.itemsize

    def memory(self) -> dict[str, Any]:
        """Storage of this bank, and its size relative to fp32 storage (the reference's)."""
        fp32 = self.num_examples * self.hidden_size * 4
        return {
            "representations": len(self),
            "dtype": str(self.dtype).removeprefix("torch."),
            "storage": "memory" if self.directory is None else f"disk ({self.directory})",
            "bytes": len(self) * self.bytes_per_representation,
            "bytes_per_representation": self.bytes_per_representation,
            "ratio_vs_fp32": self.bytes_per_representation / fp32,
        }
