"""CAP's pruning engines (spec cap.md 2.1 "Pruning engines"), built on the core's sparsity primitives.

- ``UnstructuredEngine``: CAP-m (movement top-k) and CAP-soft (sigmoid(score) > tau_t with L1), the core's
  ``MaskedLinear`` on every encoder linear, the core's cubic schedule.
- ``StructuredEngine``: CAP-f, head and FFN-neuron gates (the core's hooks) driven by binary masks kept as
  buffers of a ``UnitMasks`` submodule (so the run's state dict restores them), pruned iteratively by
  first-order importance with retraining in between.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from plmkit.cap.config import CAPConfig
from plmkit.core.sparsity import (
    SparsityScheduleCallback,
    StructuralGates,
    add_structural_gates,
    compact_model,
    export_dense,
    first_order_importance,
    mask_linears,
    units_to_keep,
)
from plmkit.core.training import MethodError

__all__ = ["IterativePruningCallback", "StructuredEngine", "UnitMasks",
           "UnstructuredEngine", "pruning_sequence"]


# ---------------------------------------------------------------------------------------------------------------
# Unstructured: CAP-m and CAP-soft
# ---------------------------------------------------------------------------------------------------------------
class UnstructuredEngine:
    """Movement scores on the encoder linears; embeddings, pooler and classifier stay dense."""

    def __init__(self, config: CAPConfig) -> None:
        self.config = config
        # CAP-m: the cubic sparsity schedule, per matrix. CAP-soft as the reference ("lambda"): the same curve on the
        # sigmoid threshold, and L1 sets the sparsity reached. CAP-soft "target": the scheduled sparsity over all
        # matrices at once (the threshold becomes the global quantile of the scores), L1 kept. The reference counts
        # the warm-ups in multiples of `warmup_steps` (2 and 3 on GLUE: about 0.2 and 0.3 of a QQP run); here they
        # are fractions of the steps, as in every plmkit schedule, so a run without LR warm-up still has them.
        if self.thresholded:
            schedule = config.schedule(initial=config.initial_threshold, final=config.final_threshold)
            self.schedule = SparsityScheduleCallback(schedule, quantity="threshold")
        else:
            ranking = "global" if config.engine == "cap-soft" else "layer"
            self.schedule = SparsityScheduleCallback(config.schedule(), ranking=ranking)

    @property
    def thresholded(self) -> bool:
        return self.config.engine == "cap-soft" and self.config.soft_sparsity == "lambda"

    def prepare(self, model: nn.Module) -> None:
        c = self.config
        if self.thresholded:  # sigmoid thresholds: scores start at 0 (sigmoid 0.5), as the reference, whatever scores_init
            names = mask_linears(model, scorer="movement", mode="threshold", threshold=c.initial_threshold,
                                 sigmoid=True, min_kept_fraction=0.005)
        else:
            names = mask_linears(model, scorer="movement", mode="topk", scores_init=c.initial_scores)
        if not names:
            raise MethodError(f"no prunable encoder linear layers found in {type(model).__name__}")

    def callbacks(self) -> list[TrainerCallback]:
        return [self.schedule]

    def regularizer_weight(self) -> float:
        """CAP-soft's lambda_t = final_lambda * v_t / v_final, v the scheduled threshold (reference) or sparsity
        ("target"); 0 for CAP-m."""
        c, current = self.config, self.schedule.current
        final = c.final_threshold if self.thresholded else c.sparsity
        if c.engine != "cap-soft" or current is None or final == 0:
            return 0.0
        return c.final_lambda * current / final

    def export(self, model: nn.Module) -> nn.Module:
        return export_dense(model)


# ---------------------------------------------------------------------------------------------------------------
# Structured: CAP-f
# ---------------------------------------------------------------------------------------------------------------
class UnitMasks(nn.Module):
    """Binary keep-masks ``head_mask`` [L, H] and ``neuron_mask`` [L, F], registered on the model as buffers.

    The core's ``StructuralGates`` apply them: a forward pre-hook on the model copies the masks into the gate
    values before every forward, so a loaded state dict takes effect and importance passes can still take
    gradients with respect to the gates (which stay outside the model and its optimizer).
    """

    ATTRIBUTE = "cap_masks"

    def __init__(self, gates: StructuralGates) -> None:
        super().__init__()
        self.register_buffer("head_mask", torch.ones_like(gates.head_gates.detach()))
        self.register_buffer("neuron_mask", torch.ones_like(gates.neuron_gates.detach()))


class StructuredEngine:
    """Attach gates + masks; prune by first-order importance; compact on export."""

    def __init__(self, config: CAPConfig) -> None:
        self.config = config
        self.gates: StructuralGates | None = None
        self.masks: UnitMasks | None = None
        self._handle: Any = None

    def prepare(self, model: nn.Module) -> None:
        try:
            self.gates = add_structural_gates(model)
        except ValueError as err:
            raise MethodError(f"cap-f: {err}") from err
        self.gates.requires_grad_(False)
        self.masks = UnitMasks(self.gates)
        model.add_module(UnitMasks.ATTRIBUTE, self.masks)
        self._handle = model.register_forward_pre_hook(self._sync)

    def _sync(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        assert self.gates is not None and self.masks is not None
        self.gates.set_masks(self.masks.head_mask, self.masks.neuron_mask)

    def importance(self, model: nn.Module, batches: Iterable[Mapping[str, Any]],
                   loss_fn: Callable[[nn.Module, dict[str, Any]], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """I = sum over batches of |dL/d gate| with the full CAP loss, each layer's vector l2-normalised."""
        assert self.gates is not None
        return first_order_importance(model, self.gates, batches, loss_fn=loss_fn, normalize="layer")

    def masks_at(self, head_importance: torch.Tensor, neuron_importance: torch.Tensor,
                 sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep-masks at a cumulative ``sparsity`` of all heads and of all neurons: the increment goes to the
        lowest-scoring live units (already-pruned ones rank first), each layer keeping its top head(s)."""
        assert self.masks is not None
        heads = head_importance.float().masked_fill(self.masks.head_mask == 0, -math.inf)
        neurons = neuron_importance.float().masked_fill(self.masks.neuron_mask == 0, -math.inf)
        return (units_to_keep(heads, sparsity, "global", self.config.min_heads_per_layer),
                units_to_keep(neurons, sparsity, "global", 0))

    @torch.no_grad()
    def set_masks(self, heads: torch.Tensor, neurons: torch.Tensor) -> None:
        assert self.masks is not None
        self.masks.head_mask.copy_(heads)
        self.masks.neuron_mask.copy_(neurons)

    def export(self, model: nn.Module) -> nn.Module:
        """The physically compacted model (load it with ``plmkit.core.sparsity.load_compacted``)."""
        assert self.gates is not None and self.masks is not None
        heads, neurons = self.masks.head_mask.detach().cpu(), self.masks.neuron_mask.detach().cpu()
        self._handle.remove()
        self.gates.remove()
        delattr(model, UnitMasks.ATTRIBUTE)
        return compact_model(model, heads, neurons)  # type: ignore[arg-type]


def pruning_sequence(sparsity: float, step: float) -> list[float]:
    """Cumulative sparsities step, 2 step, ... up to ``sparsity`` (CAP-f's 10%, 20%, ..., 90%)."""
    count = math.ceil(round(sparsity / step, 9))
    return [min(round(step * (k + 1), 9), sparsity) for k in range(count)]


def _restart_each_round(scheduler: Any, period: int, warmup: int) -> None:
    """Make a linear warm-up/decay LambdaLR restart every ``period`` steps (a fresh scheduler per retraining)."""
    def factor(step: int) -> float:
        local = step % period
        if local < warmup:
            return local / max(1, warmup)
        return max(0.0, (period - local) / max(1, period - warmup))

    if isinstance(scheduler, LambdaLR):
        scheduler.lr_lambdas = [factor for _ in scheduler.lr_lambdas]


class IterativePruningCallback(TrainerCallback):
    """CAP-f's loop inside one Trainer run: n pruning iterations at steps 0, T/n, 2T/n, ...; each one measures
    importance, lets the method snapshot the banks, applies the new masks, resets the optimizer state, and the
    (linear) learning-rate schedule restarts, so each round retrains as a fresh ``trainer.train()`` would."""

    def __init__(self, engine: StructuredEngine, on_prune: Callable[[nn.Module, Any, int, float], None]) -> None:
        self.engine = engine
        self.on_prune = on_prune
        self.events: list[tuple[int, int, float]] = []  # (optimizer step, iteration, cumulative sparsity)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        targets = pruning_sequence(self.engine.config.sparsity, self.engine.config.pruning_step)
        if not targets:
            return
        period = max(1, state.max_steps // len(targets))
        self.events = [(k * period, k, s) for k, s in enumerate(targets)]
        if args.lr_scheduler_type == "linear":
            _restart_each_round(kwargs.get("lr_scheduler"), period, args.get_warmup_steps(period))

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        due = [event for event in self.events if event[0] <= state.global_step]
        if not due:
            return
        # Several due at once only in runs shorter than the number of iterations: prune once, to the last.
        self.events = self.events[len(due):]
        _, iteration, sparsity = due[-1]
        self.on_prune(kwargs["model"], kwargs["train_dataloader"], iteration, sparsity)
        optimizer = kwargs.get("optimizer")
        if optimizer is not None:
            getattr(optimizer, "optimizer", optimizer).state.clear()
