"""When first-order pruning happens: the optimizer steps and cumulative sparsities of its pruning events."""

from __future__ import annotations

__all__ = ["first_order_events"]


def first_order_events(sparsity: float, iterations: int, total_steps: int, initial_warmup: float,
                       final_warmup: float) -> list[tuple[int, float]]:
    """(optimizer step, cumulative sparsity) of each first-order pruning step.

    One-shot prunes everything at ``initial_warmup``; iterative pruning spreads ``iterations`` equal increments
    evenly from ``initial_warmup`` to ``1 - final_warmup`` of training (CAP-f's 10%, 20%, ... schedule).
    """
    if iterations == 1:
        fractions = [initial_warmup]
    else:
        span = 1.0 - initial_warmup - final_warmup
        fractions = [initial_warmup + k * span / (iterations - 1) for k in range(iterations)]
    return [(round(f * total_steps), sparsity * (k + 1) / iterations) for k, f in enumerate(fractions)]
