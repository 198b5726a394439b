"""CAP's pruning engines (Xu et al. 2022, Sec. 3 and 4.1), built on the core's sparsity primitives.

- ``UnstructuredEngine``: CAP-m (movement top-k) and CAP-soft (sigmoid(score) > tau_t with L1), the core's
  ``MaskedLinear`` on every encoder linear, the core's cubic schedule (``SparsitySchedule``).
- ``StructuredEngine``: CAP-f, the core's ``UnitGates`` (head and FFN-neuron keep-masks held in the model, so the
  run's state dict restores them), pruned iteratively by first-order importance with retraining in between.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from plmkit.cap.config import CAPConfig
from plmkit.core.sparsity import SparsitySchedule, UnitGates, export_dense, mask_linears
from plmkit.core.training import MethodError

__all__ = ["StructuredEngine", "UnstructuredEngine", "pruning_sequence"]


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
            self.schedule = SparsitySchedule(schedule, quantity="threshold")
        else:
            ranking = "global" if config.engine == "cap-soft" else "layer"
            self.schedule = SparsitySchedule(config.schedule(), ranking=ranking)

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

    def step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Apply the schedule's value for ``step`` (after every optimizer step, and when training begins)."""
        self.schedule.apply(model, step, total_steps)

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
class StructuredEngine:
    """Attach the core's unit gates (one mask row); prune by first-order importance; compact on export."""

    def __init__(self, config: CAPConfig) -> None:
        self.config = config
        self.gates: UnitGates | None = None

    def prepare(self, model: nn.Module) -> None:
        try:
            self.gates = UnitGates.attach(model, scope="global", min_heads=self.config.min_heads_per_layer)
        except ValueError as err:
            raise MethodError(f"cap-f: {err}") from err

    def importance(self, model: nn.Module, batches: Iterable[Mapping[str, Any]],
                   loss_fn: Callable[[nn.Module, dict[str, Any]], torch.Tensor],
                   all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """I = sum over batches of |dL/d gate| ([L, H], [L, F]) with ``loss_fn`` (CAP's full loss), in eval mode,
        each layer's vector l2-normalised (the reference's ``calculate_head_and_intermediate_importance``)."""
        assert self.gates is not None
        heads, neurons = self.gates.importance(model, batches, loss_fn, normalize="layer", all_reduce=all_reduce)
        return heads[0], neurons[0]

    def masks_at(self, head_importance: torch.Tensor, neuron_importance: torch.Tensor,
                 sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep-masks at a cumulative ``sparsity`` of all heads and of all neurons: the increment goes to the
        lowest-scoring live units (already-pruned ones rank first), each layer keeping its top head(s)."""
        assert self.gates is not None
        heads = head_importance.float().masked_fill(self.gates.head_mask[0] == 0, -math.inf)
        neurons = neuron_importance.float().masked_fill(self.gates.neuron_mask[0] == 0, -math.inf)
        keep_heads, keep_neurons = self.gates.keep(heads[None], neurons[None], sparsity)
        return keep_heads[0], keep_neurons[0]

    def set_masks(self, heads: torch.Tensor, neurons: torch.Tensor) -> None:
        assert self.gates is not None
        self.gates.set_masks(heads, neurons)

    def export(self, model: nn.Module) -> nn.Module:
        """The physically compacted model (load it with ``plmkit.core.sparsity.load_compacted``)."""
        assert self.gates is not None
        return self.gates.compact(model)


def pruning_sequence(sparsity: float, step: float) -> list[float]:
    """Cumulative sparsities step, 2 step, ... up to ``sparsity`` (CAP-f's 10%, 20%, ..., 90%)."""
    count = math.ceil(round(sparsity / step, 9))
    return [min(round(step * (k + 1), 9), sparsity) for k in range(count)]
