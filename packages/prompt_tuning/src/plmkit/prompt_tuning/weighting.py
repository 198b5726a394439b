"""UPT's task-balanced multi-task sampling (Wang et al., 2022, Eq. 3).

Eq. 3 gives every example of source task k the weight

    w_k = (log|D_k| + gamma) / (M * gamma + sum_k' log|D_k'|)

The weights of the M tasks sum to 1, so they are a distribution over tasks: a task's share grows only with the
log of its size. We use them as the **stratified sampling probability** (pick task k with probability w_k, then an
example of it uniformly). Used instead as a per-example loss weight on uniformly sampled data, task k's total
weight would be |D_k| * w_k, which favours large tasks even more than no weighting; so the loss itself is an
unweighted mean over the sampled batch.

KSMLM examples form one more stratum with a fixed share of every batch (`ksmlm_share`); the loss weighs them by
lambda (see `model.py`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from plmkit.core.training import MethodError
from plmkit.prompt_tuning.sampler import EpochSampler

__all__ = ["TaskBalancedSampler", "task_balanced_weights"]


def task_balanced_weights(sizes: Sequence[int], gamma: float = 0.001) -> list[float]:
    """Eq. 3: w_k = (log|D_k| + gamma) / (M gamma + sum_k' log|D_k'|), natural log, for task sizes `sizes`."""
    if not sizes or any(s < 1 for s in sizes):
        raise MethodError(f"task sizes must be >= 1, got {list(sizes)}")
    if gamma <= 0:
        raise MethodError(f"gamma must be > 0, got {gamma}")
    logs = [math.log(s) for s in sizes]
    total = len(sizes) * gamma + sum(logs)
    return [(lg + gamma) / total for lg in logs]


class TaskBalancedSampler(EpochSampler):
    """Indices drawn task by task with probabilities `weights` (Eq. 3), plus a share of KSMLM examples.

    `tasks[i]` is example i's task (0..M-1), or -1 for a KSMLM example. Each epoch yields `len(tasks)` indices
    (rounded up to whole batches); within a task, examples are visited in a fresh random order before repeating.
    """

    def __init__(
        self, tasks: Sequence[int], weights: Sequence[float], batch_size: int, ksmlm_share: float = 0.0, seed: int = 0
    ) -> None:
        self.tasks = np.asarray(tasks)
        self.members = {k: np.flatnonzero(self.tasks == k) for k in range(len(weights))}
        empty = [k for k, m in self.members.items() if len(m) == 0]
        if empty:
            raise MethodError(f"task(s) {empty} have no examples")
        self.ksmlm = np.flatnonzero(self.tasks == -1)
        if ksmlm_share > 0 and len(self.ksmlm) == 0:
            raise MethodError("ksmlm_share > 0 but there are no KSMLM examples")
        self.per_batch_ksmlm = round(batch_size * ksmlm_share)
        if ksmlm_share > 0 and not 1 <= self.per_batch_ksmlm < batch_size:
            raise MethodError(f"a batch of {batch_size} cannot hold a KSMLM share of {ksmlm_share} (>= 1 of each kind)")
        self.weights = np.asarray(weights, dtype=float) / np.sum(weights)
        super().__init__(len(self.tasks), batch_size, seed)

    def __iter__(self) -> Iterator[int]:
        rng = self.generator()
        pools: dict[int, list[int]] = {}

        def draw(key: int, members: np.ndarray) -> int:
            if not pools.get(key):
                pools[key] = rng.permutation(members).tolist()
            return pools[key].pop()

        for _ in range(len(self) // self.batch_size):
            n_tasks = self.batch_size - self.per_batch_ksmlm
            for k in rng.choice(len(self.weights), size=n_tasks, p=self.weights):
                yield draw(int(k), self.members[int(k)])
            for _ in range(self.per_batch_ksmlm):
                yield draw(-1, self.ksmlm)
