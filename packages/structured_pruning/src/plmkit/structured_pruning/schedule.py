"""When units are pruned: pruning events for first-order importance, the cubic sparsity schedule and the final
freeze for learned scores, and the one-time ordering of Dynamic Sparsification. All run as Trainer callbacks
after optimizer steps; at the end of training every schedule is completed, so short runs still end pruned."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from plmkit.core.sparsity import cubic_sparsity
from plmkit.structured_pruning.ranking import importance_batches, unit_importance

if TYPE_CHECKING:
    from plmkit.structured_pruning.method import DynamicSparsificationMethod, StructuredPruningMethod

__all__ = ["DynamicOrderingCallback", "UnitPruningCallback", "first_order_events"]


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


class UnitPruningCallback(TrainerCallback):
    """Drives a ``StructuredPruningMethod``'s gates through training."""

    def __init__(self, method: StructuredPruningMethod) -> None:
        self.method = method
        self.events: list[tuple[int, float]] = []
        self.total_steps = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        c, gates = self.method.config, self.method.unit_gates
        self.total_steps = state.max_steps
        if c.algorithm == "first_order":
            self.events = first_order_events(c.sparsity, c.iterations, state.max_steps, c.initial_warmup,
                                             c.final_warmup)
        else:
            gates.learning, gates.sparsity = True, 0.0
        self._advance(state.global_step, args, kwargs)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        self._advance(state.global_step, args, kwargs)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self._advance(max(state.global_step, self.total_steps) + 1, args, kwargs)

    def _advance(self, step: int, args: TrainingArguments, kwargs: dict[str, Any]) -> None:
        c, gates = self.method.config, self.method.unit_gates
        if c.algorithm == "first_order":
            due = [s for at, s in self.events if at <= step]
            self.events = [(at, s) for at, s in self.events if at > step]
            if due:  # several due at once (a very short run): one importance pass for the last of them
                batches = importance_batches(kwargs["train_dataloader"], c.importance_batches,
                                             args.per_device_train_batch_size, args.seed + step)
                heads, neurons = unit_importance(kwargs["model"], gates, batches)
                gates.scores_to_masks(heads, neurons, due[-1])
            return
        if not gates.learning:
            return
        if step >= self.total_steps * (1.0 - c.final_warmup):
            gates.freeze(c.sparsity)
        else:
            gates.sparsity = cubic_sparsity(step, self.total_steps, c.sparsity, 0.0, c.initial_warmup,
                                            c.final_warmup)


class DynamicOrderingCallback(TrainerCallback):
    """Computes Dynamic Sparsification's unit ordering once, after ``ordering_warmup`` of training, and leaves
    the gates at the configured ``sparsity`` when training ends (what the run's evaluation and save see)."""

    def __init__(self, method: DynamicSparsificationMethod) -> None:
        self.method = method
        self.order_at = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self.method.start(args.seed)
        self.order_at = round(self.method.config.ordering_warmup * state.max_steps)
        self._maybe_order(state.global_step, args, kwargs)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        self._maybe_order(state.global_step, args, kwargs)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self._maybe_order(state.global_step + self.order_at + 1, args, kwargs)
        self.method.set_sparsity(self.method.config.sparsity)

    def _maybe_order(self, step: int, args: TrainingArguments, kwargs: dict[str, Any]) -> None:
        if self.method.ordered or step < self.order_at:
            return
        batches = importance_batches(kwargs["train_dataloader"], self.method.config.importance_batches,
                                     args.per_device_train_batch_size, args.seed)
        heads, neurons = unit_importance(kwargs["model"], self.method.unit_gates, batches)
        self.method.set_ordering(heads[0], neurons[0])
