"""Class-balanced training batches: PCCL needs a positive and a negative pair in every batch.

`ClassBalancedSampler` yields indices whose consecutive groups of `batch_size` each hold G = min(num_classes,
batch_size // 2) classes (the least used so far) with batch_size / G examples apiece (at least two, the remainder
spread one by one). Over an epoch it yields ceil(n / batch_size) full batches, so a `BatchSampler` over it
has exactly as many batches as one over a plain random sampler.

The method hands it to the core Trainer through the `train_sampler` hook.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from plmkit.core.training import MethodError

__all__ = ["ClassBalancedSampler", "EpochSampler"]


class EpochSampler(Sampler[int]):
    """Base of the samplers here: whole batches of indices per epoch, drawn from a generator seeded by
    (seed, epoch), so every epoch differs and a resumed run repeats the same order (`set_epoch`)."""

    def __init__(self, num_examples: int, batch_size: int, seed: int) -> None:
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_examples / self.batch_size) * self.batch_size

    def generator(self) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch))


class ClassBalancedSampler(EpochSampler):
    """Indices in class-balanced groups of `batch_size` (module docstring); reshuffled per epoch (`set_epoch`)."""

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int = 0) -> None:
        self.labels = np.asarray(labels)
        self.classes = np.unique(self.labels)
        if len(self.classes) < 2:
            raise MethodError("class-balanced batches need at least two classes in the training data")
        small = [int(c) for c in self.classes if (self.labels == c).sum() < 2]
        if small:
            raise MethodError(f"class-balanced batches need >= 2 training examples per class; class(es) {small} have 1")
        self.groups = min(len(self.classes), batch_size // 2)
        if self.groups < 2:
            raise MethodError(
                f"a batch of {batch_size} cannot hold two classes with two examples each; use a training batch size >= 4"
            )
        super().__init__(len(self.labels), batch_size, seed)

    def __iter__(self) -> Iterator[int]:
        rng = self.generator()
        members = {int(c): np.flatnonzero(self.labels == c) for c in self.classes}
        pools: dict[int, list[int]] = {c: [] for c in members}
        usage = np.zeros(len(self.classes))
        groups = self.groups
        for _ in range(len(self) // self.batch_size):
            # The least-used classes so far, ties broken at random.
            chosen = np.lexsort((rng.random(len(self.classes)), usage))[:groups]
            counts = [self.batch_size // groups] * groups
            for j in range(self.batch_size % groups):
                counts[j % groups] += 1
            for slot, count in zip(chosen, counts, strict=True):
                c = int(self.classes[slot])
                usage[slot] += 1
                for _ in range(count):
                    if not pools[c]:
                        pools[c] = rng.permutation(members[c]).tolist()
                    yield pools[c].pop()
