"""The cubic sparsity schedule of Zhu & Gupta (2017) with initial and final warm-up, as used by movement
pruning (HF's masked_run_glue.py `schedule_threshold`), PST (AliceMind S4/PST `schedule_sparsity_ratio`) and CAP,
and `SparsitySchedule`, which methods apply after every optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from plmkit.core.sparsity.layers import Ranking, masked_layers, set_sparsity, set_threshold

__all__ = ["cubic_sparsity", "cubic_sparsity_steps", "masked_sparsity", "SparsitySchedule"]


def cubic_sparsity_steps(
    step: float,
    total_steps: float,
    final_sparsity: float,
    initial_sparsity: float = 0.0,
    initial_warmup_steps: float = 0.0,
    final_warmup_steps: float = 0.0,
) -> float:
    """Cubic schedule with warm-up lengths in steps (CAP counts them in multiples of ``warmup_steps``).

    s(t) = s_i                                            for t <= I
    s(t) = s_f                                            for t >  T - F
    s(t) = s_f + (s_i - s_f) * (1 - (t - I) / (T - I - F))**3   otherwise
    """
    if step <= initial_warmup_steps:
        return initial_sparsity
    if step > total_steps - final_warmup_steps:
        return final_sparsity
    progress = (step - initial_warmup_steps) / (total_steps - initial_warmup_steps - final_warmup_steps)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3


def cubic_sparsity(
    step: float,
    total_steps: float,
    final_sparsity: float,
    initial_sparsity: float = 0.0,
    initial_warmup: float = 0.1,
    final_warmup: float = 0.3,
) -> float:
    """PST's cubic schedule; warm-ups as fractions t_i, t_f of the T total optimizer steps (0.1 and 0.3)."""
    return cubic_sparsity_steps(
        step,
        total_steps,
        final_sparsity,
        initial_sparsity,
        initial_warmup_steps=initial_warmup * total_steps,
        final_warmup_steps=final_warmup * total_steps,
    )


class SparsitySchedule:
    """Set ``schedule(completed_steps, max_steps)`` on every MaskedLinear of a model.

    A method calls ``apply(ctx.model, ctx.global_step, ctx.state.max_steps)`` in its ``on_train_begin`` (s_i on a
    fresh run; the right value when resuming, since the Trainer restores the step first) and ``on_step_end`` hooks,
    i.e. after each optimizer step as in the PST and movement-pruning loops, so the next forward and any evaluation
    use the new masks. With ``quantity="threshold"`` the value is the threshold of threshold-mode layers (soft
    movement pruning). ``current`` is the last value set.

    Example: ``SparsitySchedule(functools.partial(cubic_sparsity, final_sparsity=0.9))``.
    """

    def __init__(
        self,
        schedule: Callable[[int, int], float],
        ranking: Ranking = "layer",
        quantity: Literal["sparsity", "threshold"] = "sparsity",
    ) -> None:
        if quantity not in ("sparsity", "threshold"):
            raise ValueError(f"quantity must be 'sparsity' or 'threshold', got {quantity!r}")
        self.schedule = schedule
        self.ranking = ranking
        self.quantity = quantity
        self.current: float | None = None

    def apply(self, model: nn.Module, step: int, total_steps: int) -> float:
        self.current = self.schedule(step, total_steps)
        if self.quantity == "sparsity":
            set_sparsity(model, self.current, self.ranking)
        else:
            set_threshold(model, self.current)
        return self.current


@torch.no_grad()
def masked_sparsity(model: nn.Module) -> float:
    """Fraction of zeros in the current masks of every MaskedLinear of ``model`` (0.0 when there is none)."""
    layers = [layer for _, layer in masked_layers(model)]
    total = sum(layer.weight.numel() for layer in layers)
    zeros = sum(int((layer.mask() == 0).sum()) for layer in layers)
    return zeros / total if total else 0.0
