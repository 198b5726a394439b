"""The two methods: ``structured_pruning`` (one sparsity per run) and ``dynamic_sparsification`` (one run, any
sparsity). Both attach ``UnitGates`` to the model and compact it physically on ``export``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, TrainerCallback

from plmkit.core.sparsity import compact_model
from plmkit.core.training import Method, MethodError
from plmkit.structured_pruning.config import DynamicSparsificationConfig, StructuredPruningConfig
from plmkit.structured_pruning.dynamic import distillation_loss, sample_sparsities
from plmkit.structured_pruning.gating import UnitGates, l0_open_probability
from plmkit.structured_pruning.schedule import DynamicOrderingCallback, UnitPruningCallback

__all__ = ["DynamicSparsificationMethod", "StructuredPruningMethod", "compact_with"]


def compact_with(model: PreTrainedModel, unit_gates: UnitGates, heads: torch.Tensor,
                 neurons: torch.Tensor) -> PreTrainedModel:
    """Remove the gates from ``model`` and physically drop the units the [L, H] / [L, F] masks zero."""
    unit_gates.detach_from(model)
    return compact_model(model, heads.cpu(), neurons.cpu())


class StructuredPruningMethod(Method):
    """Heads and FFN neurons pruned by first-order importance, movement scores or L0 gates (see config)."""

    name = "structured_pruning"
    config_class = StructuredPruningConfig
    config: StructuredPruningConfig
    unit_gates: UnitGates

    def prepare_model(self, model: nn.Module) -> nn.Module:
        c = self.config
        scores = None if c.algorithm == "first_order" else c.algorithm
        self.unit_gates = UnitGates.attach(
            model, num_masks=c.num_masks, scores=scores, scope=c.ranking, min_heads=c.min_heads_per_layer,
            score_init=c.l0_init if c.algorithm == "l0" else 0.0,
        )
        if c.algorithm == "l0":
            # Lagrange multipliers of Wang et al. (2020), maximised (their gradients are flipped before each step).
            self.unit_gates.lagrange = nn.Parameter(torch.zeros(2, device=self.unit_gates.head_mask.device))
        return model

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        if self.config.algorithm == "first_order":
            return None
        own = {id(p) for p in self.unit_gates.parameters()}
        return [
            {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in own]},
            {"params": list(self.unit_gates.parameters()), "lr": self.config.scores_learning_rate,
             "weight_decay": 0.0},
        ]

    def callbacks(self) -> list[TrainerCallback]:
        return [UnitPruningCallback(self)]

    def extra_loss(self, model: nn.Module, inputs: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        """L0 only: lambda1 (E - t) + lambda2 (E - t)^2 for the expected head and neuron sparsity E and the
        scheduled target t (Wang et al. 2020's Lagrangian; the multipliers are trained by gradient ascent)."""
        gates = self.unit_gates
        if self.config.algorithm != "l0" or not gates.learning or not model.training:
            return None
        loss = gates.head_scores.new_zeros(())
        for log_alpha in (gates.head_scores, gates.neuron_scores):
            gap = (1.0 - l0_open_probability(log_alpha).mean()) - gates.sparsity
            loss = loss + gates.lagrange[0] * gap + gates.lagrange[1] * gap * gap
        return loss

    def before_optimizer_step(self, model: nn.Module) -> None:
        lagrange = getattr(self.unit_gates, "lagrange", None)
        if lagrange is not None and lagrange.grad is not None:
            lagrange.grad.neg_()

    def export(self, model: nn.Module) -> nn.Module:
        """A compacted transformers model (load it with ``plmkit.core.sparsity.load_compacted``)."""
        c, gates = self.config, self.unit_gates
        row = 0
        if c.setting == "per_language":
            if c.export_language is None:
                raise MethodError("per_language: set --method.export_language to choose which language's mask")
            row = c.languages.index(c.export_language)
        return compact_with(model, gates, gates.head_mask[row], gates.neuron_mask[row])


class DynamicSparsificationMethod(Method):
    """Nested sub-networks from one fixed first-order ordering, trained together with the sandwich rule."""

    name = "dynamic_sparsification"
    config_class = DynamicSparsificationConfig
    config: DynamicSparsificationConfig
    unit_gates: UnitGates

    def __init__(self, config: DynamicSparsificationConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.ordered = False
        self.generator = torch.Generator().manual_seed(0)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        c = self.config
        self.unit_gates = UnitGates.attach(model, ordering=True, scope=c.ranking, min_heads=c.min_heads_per_layer)
        return model

    def callbacks(self) -> list[TrainerCallback]:
        return [DynamicOrderingCallback(self)]

    def start(self, seed: int) -> None:
        """Training begins: full model until the ordering exists, sampling seeded by the run's seed."""
        self.generator.manual_seed(seed)
        self.ordered = False
        self.unit_gates.set_masks(torch.ones(1), torch.ones(1))

    def set_ordering(self, heads: torch.Tensor, neurons: torch.Tensor) -> None:
        """Fix the unit ranking ([L, H], [L, F]) every sparsity's mask is taken from."""
        self.unit_gates.head_importance.copy_(heads)
        self.unit_gates.neuron_importance.copy_(neurons)
        self.ordered = True
        self.set_sparsity(self.config.min_sparsity)

    def set_sparsity(self, sparsity: float) -> None:
        """Gate the model to the nested sub-network at ``sparsity``."""
        self.unit_gates.set_masks(*self.unit_gates.masks(sparsity))

    def extra_loss(self, model: nn.Module, inputs: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        """The losses of the other sampled sub-networks; the Trainer's forward was the smallest sparsity's.

        With ``distill``, each sub-network matches the smallest-sparsity network's logits of this same step
        (in-place distillation); otherwise it uses the task loss.
        """
        if not (model.training and self.ordered):
            return None
        c = self.config
        smallest, *others = sample_sparsities(c.grid(), c.num_sampled, self.generator)
        total = outputs.loss.new_zeros(())
        try:
            for sparsity in others:
                self.set_sparsity(sparsity)
                out = model(**inputs)
                total = total + (distillation_loss(out.logits, outputs.logits, c.temperature) if c.distill
                                 else out.loss)
        finally:
            self.set_sparsity(smallest)
        return total

    def export(self, model: nn.Module) -> nn.Module:
        """The model compacted at ``config.sparsity`` (load it with ``plmkit.core.sparsity.load_compacted``)."""
        heads, neurons = self.unit_gates.masks(self.config.sparsity)
        return compact_with(model, self.unit_gates, heads[0], neurons[0])
