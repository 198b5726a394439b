"""CAPT's pieces besides the shared NT-Xent (`plmkit.core.losses.nt_xent`): the projection head g, the gather of
views across processes (global negatives under DDP), the optional queue of past clean-view projections, and the
alignment / uniformity measures of Wang & Isola (ICML 2020, Sec. 4.1)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureQueue", "ProjectionHead", "alignment", "distributed", "gather_with_grad", "uniformity"]


class ProjectionHead(nn.Module):
    """g: Linear(H, H) - ReLU - Linear(H, P), output l2-normalised (SimCLR's non-linear projection head, Chen et al.
    2020, Sec. 2.1). The contrastive loss is taken on z = g(h), the encoder's representation h is what fine-tuning
    uses."""

    def __init__(self, hidden_size: int, projection_size: int = 128) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.ReLU()
        self.out = nn.Linear(hidden_size, projection_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.out(self.activation(self.dense(hidden))), p=2, dim=-1)


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradients of every process and returns this process's rows (rows may
    differ in number between processes). Works with every backend (only all_gather and all_reduce)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D401
        world = dist.get_world_size()
        sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
        counts = [int(s.item()) for s in sizes]
        longest = max(counts)
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        rank = dist.get_rank()
        ctx.rows = (sum(counts[:rank]), counts[rank])
        return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start, count = ctx.rows
        return grad[start : start + count]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's rows of `tensor`, concatenated in rank order, with gradients flowing back to each process's
    own rows (summed over the processes that used them). The tensor itself in a single process.

    Each process then computes the same global NT-Xent over all N views; the gradient a process receives for its
    rows is the sum over processes, i.e. world_size times dL/dz, and DDP's averaging of parameter gradients divides
    by world_size again: the parameters get dL/dtheta of the global loss, as one process with the global batch."""
    if not distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


class FeatureQueue:
    """A first-in first-out queue of past clean-view projections used as extra negatives (as MoCo's queue of keys,
    He et al. 2020, Sec. 3.2, without the momentum encoder). Holds at most `size` rows; `state()` / `load()` carry it
    through checkpoints, so a resumed run sees the same negatives."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buffer: torch.Tensor | None = None
        self.count = 0
        self.ptr = 0

    def __len__(self) -> int:
        return self.count

    def negatives(self, device: torch.device) -> torch.Tensor | None:
        if self.buffer is None or self.count == 0:
            return None
        if self.buffer.device != device:
            self.buffer = self.buffer.to(device)
        return self.buffer[: self.count]

    @torch.no_grad()
    def push(self, z: torch.Tensor) -> None:
        if self.size == 0 or z.shape[0] == 0:
            return
        z = z.detach().float()
        if self.buffer is None:
            self.buffer = torch.zeros(self.size, z.shape[1], device=z.device)
        elif self.buffer.device != z.device:
            self.buffer = self.buffer.to(z.device)
        if z.shape[0] >= self.size:
            self.buffer.copy_(z[-self.size :])
            self.ptr, self.count = 0, self.size
            return
        n = z.shape[0]
        end = self.ptr + n
        if end <= self.size:
            self.buffer[self.ptr : end] = z
        else:
            first = self.size - self.ptr
            self.buffer[self.ptr :] = z[:first]
            self.buffer[: n - first] = z[first:]
        self.ptr = end % self.size
        self.count = min(self.size, self.count + n)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"queue_count": self.count, "queue_ptr": self.ptr}
        if self.buffer is not None and self.count:
            state["queue"] = self.buffer.detach().cpu()
        return state

    def load(self, state: dict[str, Any]) -> None:
        self.count = int(state.get("queue_count", 0))
        self.ptr = int(state.get("queue_ptr", 0))
        buffer = state.get("queue")
        if self.count and buffer is None:
            raise ValueError(f"the checkpoint says the queue holds {self.count} rows but stores none")
        if buffer is not None and buffer.shape[0] != self.size:
            raise ValueError(f"the checkpoint's queue holds {buffer.shape[0]} rows; queue_size is {self.size}")
        self.buffer = None if buffer is None else buffer.clone().float()


@torch.no_grad()
def alignment(a: torch.Tensor, b: torch.Tensor, alpha: float = 2.0) -> float:
    """E ||f(x) - f(y)||^alpha over positive pairs (rows of `a` and `b`), of l2-normalised features (Wang & Isola
    2020, Eq. 2 with alpha = 2): 0 when the two views coincide, 4 at the most."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    return float((a - b).norm(dim=1).pow(alpha).mean())


@torch.no_grad()
def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log E exp(-t ||f(x) - f(y)||^2) over distinct pairs of l2-normalised features (Wang & Isola 2020, Eq. 3 with
    t = 2): lower is more uniform on the sphere; NaN with fewer than two rows."""
    if z.shape[0] < 2:
        return float("nan")
    z = F.normalize(z.float(), dim=-1)
    return float(torch.pdist(z).pow(2).mul(-t).exp().mean().log())
