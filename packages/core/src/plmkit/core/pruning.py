"""Unstructured pruning baselines as a method: magnitude pruning (MaP) and movement pruning (MvP).

Both prune the linear layers of the transformer blocks with a per-matrix (or global) top-k mask whose sparsity
follows the cubic schedule (Zhu & Gupta 2017; Sanh et al. 2020), and differ only in the score: |W| for MaP, a
trained score tensor for MvP (its straight-through gradient is -W * dL/dW', the "movement"). PST and CAP
compare against exactly these, so they live in the core.

    plmkit train --data rt-polarity --method pruning --method.scorer movement --method.sparsity 0.9
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from plmkit.core.sparsity import (
    SparsitySchedule,
    cubic_sparsity,
    export_dense,
    mask_linears,
    masked_sparsity,
    set_sparsity,
)
from plmkit.core.testing.contract import ContractCase
from plmkit.core.training import Method, MethodConfig, MethodContext, MethodError

__all__ = ["CubicScheduleConfig", "MovementScoresConfig", "PruningConfig", "PruningMethod", "movement_parameter_groups"]


@dataclass
class CubicScheduleConfig(MethodConfig):
    """The cubic sparsity schedule's options, shared by every method that prunes with it (MaP/MvP, PST, ...)."""

    sparsity: float = field(default=0.9, metadata={"help": "final fraction of zeros in every pruned matrix, [0, 1)"})
    initial_sparsity: float = field(default=0.0, metadata={"help": "sparsity during the initial warm-up"})
    initial_warmup: float = field(default=0.1, metadata={"help": "fraction t_i of the steps before pruning starts"})
    final_warmup: float = field(default=0.3, metadata={"help": "fraction t_f of the final steps at the target sparsity"})
    min_steps: int = field(
        default=500,
        metadata={"help": "stop with an error before training when the run has fewer optimizer steps: unstructured "
                          "pruning to high sparsity needs them to recover (0 = no check)"},
    )

    def validate(self) -> None:
        if self.min_steps < 0:
            raise MethodError(f"min_steps must be >= 0 (0 = no check), got {self.min_steps}")
        for name in ("sparsity", "initial_sparsity"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise MethodError(f"{name} must be in [0, 1), got {value}")
        if self.initial_sparsity > self.sparsity:
            raise MethodError(f"initial_sparsity {self.initial_sparsity} exceeds the final sparsity {self.sparsity}")
        if not (self.initial_warmup >= 0.0 and self.final_warmup >= 0.0 and self.initial_warmup + self.final_warmup < 1.0):
            raise MethodError(
                "initial_warmup and final_warmup must be >= 0 with a sum below 1, "
                f"got {self.initial_warmup}, {self.final_warmup}"
            )

    def check_steps(self, method: str, total_steps: int) -> None:
        """MethodError when `total_steps` (the run's optimizer steps) is below `min_steps`. Measured with MiniLM on
        TREC (1,024 questions, batch 16, lr 1e-4; fine-tuning 90.7% in 128 steps, 92.7% in 512): MvP, PST and CAP-m
        at 90% sparsity reach 48-58% in 128 steps, 70-74% in 256 and 80-82% in 512 (the core README's defaults
        table), so a short run's default prune does not train."""
        if self.min_steps and total_steps < self.min_steps:
            raise MethodError(
                f"{method}: {total_steps} optimizer steps are too few to prune to {self.sparsity:.0%} sparsity and "
                f"recover (MiniLM on TREC at 90%: 128 steps ended 33-42 accuracy points below fine-tuning, 512 steps "
                f"10-13 below); train for at least {self.min_steps} steps (--num_train_epochs or "
                f"--max_steps), or pass --method.min_steps 0 to train anyway (a lower --method.sparsity needs fewer)")

    def schedule(self, initial: float | None = None, final: float | None = None) -> Callable[[int, int], float]:
        """s(step, total_steps) for `SparsitySchedule`: from `initial_sparsity` to `sparsity`, or between
        other end points on the same warm-ups (a threshold schedule, for example)."""
        return functools.partial(
            cubic_sparsity,
            final_sparsity=self.sparsity if final is None else final,
            initial_sparsity=self.initial_sparsity if initial is None else initial,
            initial_warmup=self.initial_warmup,
            final_warmup=self.final_warmup,
        )


@dataclass
class MovementScoresConfig(CubicScheduleConfig):
    """How movement scores start and learn (MvP here, CAP-m/CAP-soft in plmkit-cap)."""

    scores_init: str = field(
        default="magnitude",
        metadata={"help": "magnitude: scores start at |W| (the first masks are MaP's, movement re-ranks from there); "
                          "zeros: the HF movement-pruning reference (all tied at 0, first masks near random)"},
    )
    scores_learning_rate: float | None = field(
        default=None,
        metadata={"help": "learning rate of the scores; None = the model's (the reference, with zeros: 1e-2)"},
    )
    scores_lr_schedule: str = field(
        default="shared",
        metadata={"help": "shared: scores follow --lr_scheduler_type like the weights (the reference); constant: no "
                          "warm-up or decay for the scores"},
    )

    def validate(self) -> None:
        super().validate()
        for name, allowed in (("scores_init", ("zeros", "magnitude")), ("scores_lr_schedule", ("shared", "constant"))):
            if getattr(self, name) not in allowed:
                raise MethodError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")

    @property
    def initial_scores(self) -> float | str:
        """The `scores_init` argument of `MaskedLinear.from_linear`."""
        return 0.0 if self.scores_init == "zeros" else "magnitude"


@dataclass
class PruningConfig(MovementScoresConfig):
    """Magnitude (MaP) or movement (MvP) pruning of the block linears with the cubic sparsity schedule."""

    scorer: str = field(default="movement", metadata={"help": "movement (MvP, trained scores) or magnitude (MaP, |W|)"})
    ranking: str = field(default="layer", metadata={"help": "layer: top-k per matrix; global: one ranking for all"})

    def validate(self) -> None:
        super().validate()
        for name, allowed in (("scorer", ("movement", "magnitude")), ("ranking", ("layer", "global"))):
            if getattr(self, name) not in allowed:
                raise MethodError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")


def movement_parameter_groups(
    model: nn.Module, scores_learning_rate: float | None, schedule: str = "shared"
) -> list[dict[str, Any]]:
    """Two optimizer groups: everything trainable but the movement scores (the Trainer's defaults), and the scores
    with their own learning rate (None = the model's), no weight decay, and their own LR schedule (as the HF
    movement-pruning reference's `mask_scores` group)."""
    scores = [p for n, p in model.named_parameters() if n.endswith(".scores") and p.requires_grad]
    others = [p for n, p in model.named_parameters() if not n.endswith(".scores") and p.requires_grad]
    group: dict[str, Any] = {"params": scores, "weight_decay": 0.0, "lr_schedule": schedule}
    if scores_learning_rate is not None:
        group["lr"] = scores_learning_rate
    return [{"params": others}, group]


class PruningMethod(Method):
    name = "pruning"
    config_class = PruningConfig
    config: PruningConfig
    # min_steps 0: the kit's runs are 16 steps; its TREC run takes the 512 steps min_steps asks for.
    contract = ContractCase("pruning", {"min_steps": 0}, trec_budget={"num_train_epochs": 8})

    def __init__(self, config: PruningConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.schedule = SparsitySchedule(self.config.schedule(), ranking=self.config.ranking)
        self.reached: float | None = None

    def prepare_model(self, model: nn.Module, ctx: MethodContext | None = None) -> nn.Module:
        if not mask_linears(model, scorer=self.config.scorer, mode="topk", scores_init=self.config.initial_scores):
            raise MethodError(f"no prunable linear layers found in {type(model).__name__}")
        set_sparsity(model, self.config.initial_sparsity, self.config.ranking)
        return model

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        c = self.config
        if c.scorer != "movement" or (c.scores_learning_rate is None and c.scores_lr_schedule == "shared"):
            return None
        return movement_parameter_groups(model, c.scores_learning_rate, c.scores_lr_schedule)

    def on_train_begin(self, ctx: MethodContext) -> None:
        self.config.check_steps(self.name, ctx.state.max_steps)
        self.schedule.apply(ctx.model, ctx.global_step, ctx.state.max_steps)

    def on_step_end(self, ctx: MethodContext) -> None:
        self.schedule.apply(ctx.model, ctx.global_step, ctx.state.max_steps)

    def report(self) -> dict[str, Any]:
        return {"masked_sparsity": self.reached} if self.reached is not None else {}

    def on_train_end(self, ctx: MethodContext) -> None:
        self.reached = masked_sparsity(ctx.model)

    def export(self, model: nn.Module) -> nn.Module:
        """Plain dense layers holding mask * W: loads in transformers, zeros included."""
        return export_dense(model)
