"""The two methods: ``structured_pruning`` (one sparsity per run) and ``dynamic_sparsification`` (one run, any
sparsity). Both attach the core's ``UnitGates`` to the model (``model.unit_gates``: masks, scores and ordering in
its state dict) and compact it physically on ``export``.

When units are pruned (lifecycle hooks, after optimizer steps): first-order pruning events at fixed steps, the
cubic sparsity schedule and the final freeze for learned scores, and Dynamic Sparsification's one-time ordering.
At the end of training every schedule is completed, so short runs still end pruned. What has happened is in
``state_dict()``, so a resumed run neither repeats nor skips a pruning event.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

import torch
from datasets import DatasetDict
from torch import nn

from plmkit.core.errors import DataError
from plmkit.core.losses import distillation_loss
from plmkit.core.sparsity import UnitGates, can_slice, cubic_sparsity, transformer_blocks
from plmkit.core.testing.contract import ContractCase
from plmkit.core.training import Method, MethodContext, MethodError
from plmkit.structured_pruning.config import DynamicSparsificationConfig, StructuredPruningConfig
from plmkit.structured_pruning.dynamic import sample_sparsities
from plmkit.structured_pruning.ranking import LANGUAGE, importance_batches, model_inputs, unit_importance
from plmkit.structured_pruning.schedule import first_order_events

__all__ = ["DynamicSparsificationMethod", "StructuredPruningMethod"]

logger = logging.getLogger(__name__)


def _attach(model: nn.Module, **options: Any) -> UnitGates:
    try:
        return UnitGates.attach(model, **options)
    except ValueError as err:
        raise MethodError(str(err)) from err


class StructuredPruningMethod(Method):
    """Heads and FFN neurons pruned by first-order importance, movement scores or L0 gates (see config)."""

    contract = ContractCase("structured_pruning", {"sparsity": 0.5}, exports="compacted", extra_passes=True)

    name = "structured_pruning"
    config_class = StructuredPruningConfig
    config: StructuredPruningConfig
    unit_gates: UnitGates

    def __init__(self, config: StructuredPruningConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.pruned = 0  # first-order pruning events done
        self.learning = self.config.algorithm != "first_order"  # scores still drive the gates
        self.restored = False

    @property
    def batch_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (LANGUAGE,) if self.config.setting == "per_language" else ()

    # -- set-up --------------------------------------------------------------------------------------------------
    def prepare_data(self, data: DatasetDict, ctx: MethodContext) -> DatasetDict:
        """per_language: the `language` column as row indices of ``--method.languages`` (codes or indices)."""
        if self.config.setting != "per_language":
            return data
        languages = self.config.languages
        index = {code: i for i, code in enumerate(languages)}
        for split in list(data):
            values = data[split][LANGUAGE]
            unknown = sorted({str(v) for v in values if index.get(v) is None and not _valid_index(v, len(languages))})
            if unknown:
                raise DataError(
                    f"the {split} split has language(s) {unknown[:10]} that are not in --method.languages {languages}"
                )
            rows = [v if _valid_index(v, len(languages)) else index[v] for v in values]
            data[split] = data[split].remove_columns(LANGUAGE).add_column(LANGUAGE, rows)
        return data

    def prepare_model(self, model: nn.Module, ctx: MethodContext | None = None) -> nn.Module:
        c = self.config
        scores = None if c.algorithm == "first_order" else c.algorithm
        self.unit_gates = _attach(
            model, num_masks=c.num_masks, scores=scores, scope=c.ranking, min_heads=c.min_heads_per_layer,
            score_init=c.l0_init if c.algorithm == "l0" else 0.0,
        )
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

    # -- every step ---------------------------------------------------------------------------------------------
    def prepare_batch(self, batch: dict[str, Any], ctx: MethodContext) -> dict[str, Any]:
        if self.config.setting == "per_language":
            self.unit_gates.use_rows(batch[LANGUAGE])
        return batch

    def loss_terms(self, model: nn.Module, batch: dict[str, Any], outputs: Any,
                   ctx: MethodContext) -> dict[str, torch.Tensor]:
        """L0 only: Wang et al. (2020)'s Lagrangian pulling the expected sparsity to the scheduled target."""
        gates = self.unit_gates
        if self.config.algorithm != "l0" or not gates.learning:
            return {}
        return {"l0": gates.lagrangian(gates.sparsity)}

    def before_optimizer_step(self, model: nn.Module, ctx: MethodContext | None = None) -> None:
        """The Lagrange multipliers ascend: their gradients are flipped."""
        lagrange = getattr(self.unit_gates, "lagrange", None)
        if lagrange is not None and lagrange.grad is not None:
            lagrange.grad.neg_()

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def on_train_begin(self, ctx: MethodContext) -> None:
        if not self.restored:
            self.pruned, self.learning = 0, self.config.algorithm != "first_order"
        self.unit_gates.learning = self.learning
        self._advance(ctx, ctx.global_step)

    def on_step_end(self, ctx: MethodContext) -> None:
        self._advance(ctx, ctx.global_step)

    def on_train_end(self, ctx: MethodContext) -> None:
        self._advance(ctx, max(ctx.global_step, ctx.state.max_steps) + 1)

    def _advance(self, ctx: MethodContext, step: int) -> None:
        c, gates, total = self.config, self.unit_gates, ctx.state.max_steps
        if c.algorithm == "first_order":
            events = first_order_events(c.sparsity, c.iterations, total, c.initial_warmup, c.final_warmup)
            due = [k for k, (at, _) in enumerate(events) if at <= step and k >= self.pruned]
            if due:  # several due at once (a very short run): one importance pass for the last of them
                batches = importance_batches(ctx, c.importance_batches, ctx.args.seed + step)
                heads, neurons = unit_importance(ctx, gates, batches, c.setting == "per_language")
                gates.set_masks(*gates.keep(heads, neurons, events[due[-1]][1]))
                self.pruned = due[-1] + 1
            return
        if not self.learning:
            return
        if step >= total * (1.0 - c.final_warmup):
            gates.freeze(c.sparsity)
            self.learning = False
        else:
            gates.sparsity = cubic_sparsity(step, total, c.sparsity, 0.0, c.initial_warmup, c.final_warmup)

    # -- state, report, export ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"pruned": self.pruned, "learning": self.learning}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pruned, self.learning = int(state["pruned"]), bool(state["learning"])
        self.restored = True
        if not self.learning and self.config.algorithm != "first_order":
            for p in (self.unit_gates.head_scores, self.unit_gates.neuron_scores):
                p.requires_grad_(False)

    def report(self) -> dict[str, Any]:
        return self.unit_gates.sparsity_reached() if hasattr(self, "unit_gates") else {}

    def export(self, model: nn.Module) -> nn.Module:
        """A compacted transformers model (load it with ``plmkit.core.sparsity.load_compacted``)."""
        c = self.config
        row = 0
        if c.setting == "per_language":
            if c.export_language is None:
                raise MethodError("per_language: set --method.export_language to choose which language's mask")
            row = c.languages.index(c.export_language)
        return self.unit_gates.compact(model, row=row)


def _valid_index(value: Any, count: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < count


class DynamicSparsificationMethod(Method):
    """Nested sub-networks from one fixed first-order ordering, trained together with the sandwich rule."""

    contract = ContractCase("dynamic_sparsification", exports="compacted", extra_passes=True)

    name = "dynamic_sparsification"
    config_class = DynamicSparsificationConfig
    config: DynamicSparsificationConfig
    unit_gates: UnitGates

    def __init__(self, config: DynamicSparsificationConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.ordered = False
        self.generator = torch.Generator().manual_seed(0)
        self.restored = False

    def prepare_model(self, model: nn.Module, ctx: MethodContext | None = None) -> nn.Module:
        c = self.config
        self.unit_gates = _attach(model, ordering=True, scope=c.ranking, min_heads=c.min_heads_per_layer)
        self.slice = c.slice_subnetworks
        reason = can_slice(transformer_blocks(model)) if self.slice else None
        if reason is not None:
            logger.warning("dynamic_sparsification: %s cannot be sliced (%s); its sub-networks run at full width "
                           "with gates", type(model).__name__, reason)
            self.slice = False
        return model

    def start(self, seed: int) -> None:
        """Training begins: the full model until the ordering exists, sampling seeded by the run's seed."""
        self.generator.manual_seed(seed)
        self.ordered = False
        self.unit_gates.set_masks(torch.ones(1), torch.ones(1))

    def set_ordering(self, heads: torch.Tensor, neurons: torch.Tensor) -> None:
        """Fix the unit ranking ([L, H], [L, F]) every sparsity's mask is taken from."""
        self.unit_gates.set_ordering(heads, neurons)
        self.ordered = True
        self.set_sparsity(self.config.min_sparsity)

    def set_sparsity(self, sparsity: float) -> None:
        """Gate the model to the nested sub-network at ``sparsity``."""
        self.unit_gates.set_masks(*self.unit_gates.masks(sparsity))

    # -- every step ---------------------------------------------------------------------------------------------
    def loss_terms(self, model: nn.Module, batch: dict[str, Any], outputs: Any,
                   ctx: MethodContext | None = None) -> dict[str, torch.Tensor]:
        """The losses of the other sampled sub-networks; the Trainer's forward was the smallest sparsity's. With
        ``slice_subnetworks`` each runs on its kept units' weights only (``UnitGates.sliced``).

        With ``distill`` (term ``distill``), each sub-network matches the smallest-sparsity network's logits of
        this same step (in-place distillation); otherwise (term ``subnetworks``) it uses the task loss.
        """
        if not self.ordered:
            return {}
        c = self.config
        smallest, *others = sample_sparsities(c.grid(), c.num_sampled, self.generator)
        inputs = model_inputs(batch)
        total = outputs.logits.new_zeros((), dtype=torch.float32)
        try:
            for sparsity in others:
                self.set_sparsity(sparsity)
                with self.unit_gates.sliced(model) if self.slice else nullcontext():
                    out = model(**inputs)
                total = total + (distillation_loss(out.logits, outputs.logits, c.temperature) if c.distill
                                 else out.loss)
        finally:
            self.set_sparsity(smallest)
        return {"distill" if c.distill else "subnetworks": total}

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def on_train_begin(self, ctx: MethodContext) -> None:
        if getattr(ctx.args, "gradient_checkpointing", False):
            raise MethodError("dynamic_sparsification runs several sub-networks per step, and gradient checkpointing "
                              "would recompute each one's activations with the last one's masks (wrong gradients): "
                              "drop --gradient_checkpointing")
        if not self.restored:
            self.start(ctx.args.seed)
        self._maybe_order(ctx, ctx.global_step)

    def on_step_end(self, ctx: MethodContext) -> None:
        self._maybe_order(ctx, ctx.global_step)

    def on_train_end(self, ctx: MethodContext) -> None:
        """Order now if training was too short to, and leave the gates at ``sparsity`` (what the run's evaluation
        and saved model see)."""
        self._maybe_order(ctx, None)
        self.set_sparsity(self.config.sparsity)

    def _maybe_order(self, ctx: MethodContext, step: int | None) -> None:
        c = self.config
        if self.ordered or (step is not None and step < round(c.ordering_warmup * ctx.state.max_steps)):
            return
        batches = importance_batches(ctx, c.importance_batches, ctx.args.seed)
        heads, neurons = unit_importance(ctx, self.unit_gates, batches, per_language=False)
        self.set_ordering(heads[0], neurons[0])

    # -- state, export ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"ordered": self.ordered, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ordered = bool(state["ordered"])
        self.generator.set_state(state["generator"])
        self.restored = True

    def export(self, model: nn.Module) -> nn.Module:
        """The model compacted at ``config.sparsity`` (load it with ``plmkit.core.sparsity.load_compacted``)."""
        heads, neurons = self.unit_gates.masks(self.config.sparsity)
        return self.unit_gates.compact(model, heads[0], neurons[0])
