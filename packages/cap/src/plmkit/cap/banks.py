"""Representation banks (spec cap.md 2.1 "Memory banks") and the example index that addresses them.

A bank holds R l2-normalised representations [N, H] of every training example: one for PrC (the pre-trained
model) and FiC (the fine-tuned teacher), one per snapshot for SnC. They are computed without gradient and
stored compactly on the CPU (float16 by default: half of fp32) or as memory-mapped files on disk.

Example ids. The core's ``encode`` keeps only the model's input columns, so batches carry no example index.
``ExampleIndex`` recovers it from the batch itself: each training example's unpadded ``input_ids`` (the tokens
under ``attention_mask``) are hashed once, and every batch row is looked up by the same key. This does not
depend on the sampler, shuffling, gradient accumulation, dataloader prefetching or the number of processes.
Identical token sequences share one row (the builtin datasets are de-duplicated; for others, duplicates
encode to the same representation anyway and keep the first occurrence's label in the label bank).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plmkit.core.training import MethodError

__all__ = ["DTYPES", "ExampleIndex", "RepresentationBank"]

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def _key(tokens: Sequence[int] | np.ndarray) -> bytes:
    return np.asarray(tokens, dtype=np.int64).tobytes()


class ExampleIndex:
    """Row of each training example, found from a batch's ``input_ids`` and ``attention_mask``."""

    def __init__(self, input_ids: Iterable[Sequence[int]]) -> None:
        self.rows: dict[bytes, int] = {}
        for row, tokens in enumerate(input_ids):
            self.rows.setdefault(_key(tokens), row)
        self.num_examples = row + 1 if self.rows else 0

    def __len__(self) -> int:
        return self.num_examples

    def lookup(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Rows [B] of the batch's examples; raises MethodError for an example not in the training set."""
        ids = batch["input_ids"].detach().cpu().numpy()
        mask = batch.get("attention_mask")
        keep = np.ones_like(ids, dtype=bool) if mask is None else mask.detach().cpu().numpy().astype(bool)
        try:
            return torch.tensor([self.rows[_key(t[m])] for t, m in zip(ids, keep, strict=True)], dtype=torch.long)
        except KeyError as missing:
            raise MethodError(
                "a training batch holds an example that is not in the training set the banks were built from"
            ) from missing


class RepresentationBank:
    """R representations [N, H] per training example, stored in ``dtype`` (spec cap.md 2.3: N x H per entry).

    ``directory`` set: each representation is a memory-mapped file there (RAM stays free for large N).
    """

    def __init__(
        self, name: str, num_examples: int, hidden_size: int, dtype: torch.dtype = torch.float16,
        directory: str | Path | None = None,
    ) -> None:
        self.name, self.num_examples, self.hidden_size, self.dtype = name, num_examples, hidden_size, dtype
        self.directory = Path(directory) if directory is not None else None
        self.entries: list[torch.Tensor] = []

    @classmethod
    def on_disk(cls, name: str, num_examples: int, hidden_size: int, dtype: torch.dtype,
                directory: str | Path | None) -> RepresentationBank:
        folder = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="plmkit-cap-banks-"))
        folder.mkdir(parents=True, exist_ok=True)
        return cls(name, num_examples, hidden_size, dtype, folder)

    def __len__(self) -> int:
        """R, the number of representations per example."""
        return len(self.entries)

    def append(self, representations: torch.Tensor) -> None:
        """Store one representation of every example ([N, H], rows in training-set order)."""
        if tuple(representations.shape) != (self.num_examples, self.hidden_size):
            raise ValueError(
                f"bank {self.name}: expected [{self.num_examples}, {self.hidden_size}], got {tuple(representations.shape)}"
            )
        values = representations.detach().to("cpu", self.dtype)
        if self.directory is None:
            self.entries.append(values.contiguous())
            return
        path = self.directory / f"{self.name}-{len(self.entries)}.bin"
        mapped = torch.from_file(str(path), shared=True, size=values.numel(), dtype=self.dtype)
        mapped.view_as(values).copy_(values)
        self.entries.append(mapped.view_as(values))

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """The stored representations of ``rows``: [len(rows), R, H] in the storage dtype."""
        return torch.stack([entry.index_select(0, rows) for entry in self.entries], dim=1)

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
