"""Child-Tuning_D's child network: the parameters with the largest diagonal Fisher information on the task.

The paper (Section 3.2) scores every parameter w_i by the empirical Fisher information at the pre-trained weights,

    F_i = 1/|D| * sum_j (d log p(y_j | x_j; w) / d w_i)^2,

and keeps the top-p_D fraction, once, before fine-tuning. The authors' code estimates F_i from squared
*mini-batch-mean* gradients, each scored tensor's gradient first clipped to L2 norm <= max_grad_norm, and takes one
global threshold over all scored entries; that is the default here, per-example gradients are an option.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from plmkit.child_tuning.masks import matching_parameters

__all__ = ["fisher_mask", "fisher_scores", "keep_threshold"]

Batch = Mapping[str, Any]


def _examples(batch: Batch) -> Iterable[dict[str, Any]]:
    """Split a collated batch into batches of one example (the paper's per-example gradients)."""
    size = next(v.shape[0] for v in batch.values() if torch.is_tensor(v))
    for i in range(size):
        yield {k: v[i : i + 1] if torch.is_tensor(v) else v for k, v in batch.items()}


@contextlib.contextmanager
def _only_scored_require_grad(model: nn.Module, scored: Mapping[str, nn.Parameter]):
    """Skip the backward of unscored tensors (the word embeddings are half of a MiniLM): their gradients are not used."""
    keep = {id(p) for p in scored.values()}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in keep]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _distributed_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over the processes of torch.distributed (in place); a no-op in a single process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def _model_loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return model(**batch).loss


def fisher_scores(
    model: nn.Module,
    dataloader: Iterable[Batch],
    pattern: str = "layer",
    grad_clip: float = 1.0,
    per_example: bool = False,
    autocast_dtype: torch.dtype | None = None,
    *,
    num_batches: int | None = None,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    loss_fn: Callable[[nn.Module, dict[str, Any]], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher information of the parameters whose name matches `pattern`.

    One pass over `dataloader` (batches the model takes as `model(**batch)` and returns a `.loss` for, or that
    `loss_fn(model, batch)` turns into a loss) in train mode, as the reference does. Each gradient (of the batch-mean
    loss, or of each example's loss if `per_example`) is clipped per tensor to L2 norm `grad_clip` (0: no
    clipping), squared and averaged. The global random state is left as it was, so the pass changes neither
    dropout nor data order of the training that follows.

    Several processes, each over its own share of the batches: every squared batch gradient is divided by
    `num_batches`, the number of batches of all processes together (default: `len(dataloader)` summed over the
    processes), and the sums are added with `all_reduce` (in-place sum over processes; default torch.distributed's),
    so every process gets the scores a single process computes over all the batches (up to the order of the float
    additions). Per example, the squared gradients and the example count are summed over processes before dividing.
    """
    scored = matching_parameters(model, pattern)
    if not scored:
        raise ValueError(f"no trainable parameter name matches {pattern!r}: nothing to score")
    device = next(iter(scored.values())).device
    reduce = all_reduce if all_reduce is not None else _distributed_sum
    loss_fn = loss_fn if loss_fn is not None else _model_loss
    scores = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in scored.items()}
    # The reference divides every term by the number of batches up front; per example the count is known at the end.
    if per_example:
        n_terms = 1
    elif num_batches is not None:
        n_terms = num_batches
    else:
        n_terms = int(reduce(torch.tensor([len(dataloader)], dtype=torch.float64, device=device)).item())  # type: ignore[arg-type]
    seen = 0
    was_training = model.training
    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    )
    rng_devices = [device] if device.type == "cuda" else []
    model.train()
    model.zero_grad(set_to_none=True)
    with torch.random.fork_rng(devices=rng_devices), _only_scored_require_grad(model, scored):
        for batch in dataloader:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            for inputs in _examples(batch) if per_example else (batch,):
                with autocast:
                    loss = loss_fn(model, inputs)
                loss.backward()
                for name, p in scored.items():
                    if p.grad is None:
                        continue
                    if grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(p, grad_clip)
                    scores[name] += p.grad.float() ** 2 / n_terms
                model.zero_grad(set_to_none=True)
                seen += 1
    model.train(was_training)
    for s in scores.values():
        reduce(s)
    if per_example:
        total = int(reduce(torch.tensor([seen], dtype=torch.float64, device=device)).item())
        for s in scores.values():
            s /= max(total, 1)
    return scores


def keep_threshold(scores: Iterable[torch.Tensor], reserve_p: float) -> torch.Tensor:
    """The smallest score kept when the top `reserve_p` fraction of all entries is kept (one global threshold).

    The reference keeps score >= np.percentile(scores, 100 * (1 - p)) (linear interpolation). Between two distinct
    neighbours that keeps everything from the upper one, so the threshold is the order statistic at rank
    ceil((1 - p) * (n - 1)), found with `torch.kthvalue` in O(n) time and one float32 copy of the scores (no sort,
    no Python lists; `torch.quantile` refuses inputs above 16M entries).
    """
    if not 0.0 < reserve_p <= 1.0:
        raise ValueError(f"reserve_p must be in (0, 1], got {reserve_p}")
    flat = torch.cat([s.detach().reshape(-1).to("cpu", torch.float32) for s in scores])
    rank = math.ceil((1.0 - reserve_p) * (flat.numel() - 1))
    return torch.kthvalue(flat, rank + 1).values


def fisher_mask(
    model: nn.Module,
    dataloader: Iterable[Batch],
    reserve_p: float,
    pattern: str = "layer",
    grad_clip: float = 1.0,
    per_example: bool = False,
    autocast_dtype: torch.dtype | None = None,
    **options: Any,
) -> dict[str, torch.Tensor]:
    """Child-Tuning_D's fixed child network: {parameter name: bool mask}, True for the top-`reserve_p` Fisher entries.

    Ties at the threshold are kept, so slightly more than `reserve_p` can survive (as in the reference). `options`
    go to `fisher_scores` (`num_batches`, `all_reduce`, `loss_fn`).
    """
    scores = fisher_scores(model, dataloader, pattern, grad_clip, per_example, autocast_dtype, **options)
    threshold = keep_threshold(scores.values(), reserve_p)
    return {name: s >= threshold.to(s.device) for name, s in scores.items()}
