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
from transformers import TrainerCallback

from plmkit.core.sparsity import (
    SparsityScheduleCallback,
    cubic_sparsity,
    export_dense,
    mask_linears,
    set_sparsity,
)
from plmkit.core.training import Method, MethodConfig, MethodError

__all__ = ["CubicScheduleConfig", "PruningConfig", "PruningMethod"]


@dataclass
class CubicScheduleConfig(MethodConfig):
    """The cubic sparsity schedule's options, shared by every method that prunes with it (MaP/MvP, PST, ...)."""

    sparsity: float = field(default=0.9, metadata={"help": "final fraction of zeros in every pruned matrix, [0, 1)"})
    initial_sparsity: float = field(default=0.0, metadata={"help": "sparsity during the initial warm-up"})
    initial_warmup: float = field(default=0.1, metadata={"help": "fraction t_i of the steps before pruning starts"})
    final_warmup: float = field(default=0.3, metadata={"help": "fraction t_f of the final steps at the target sparsity"})

    def validate(self) -> None:
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

    def schedule(self) -> Callable[[int, int], float]:
        """s(step, total_steps) for `SparsityScheduleCallback`."""
        return functools.partial(
            cubic_sparsity,
            final_sparsity=self.sparsity,
            initial_sparsity=self.initial_sparsity,
            initial_warmup=self.initial_warmup,
            final_warmup=self.final_warmup,
        )


@dataclass
class PruningConfig(CubicScheduleConfig):
    """Magnitude (MaP) or movement (MvP) pruning of the block linears with the cubic sparsity schedule."""

    scorer: str = field(default="movement", metadata={"help": "movement (MvP, trained scores) or magnitude (MaP, |W|)"})
    ranking: str = field(default="layer", metadata={"help": "layer: top-k per matrix; global: one ranking for all"})
    scores_learning_rate: float | None = field(
        default=None, metadata={"help": "learning rate of movement scores (HF movement pruning: 1e-2); None = the model's"}
    )

    def validate(self) -> None:
        super().validate()
        if self.scorer not in ("movement", "magnitude"):
            raise MethodError(f"scorer must be 'movement' or 'magnitude', got {self.scorer!r}")
        if self.ranking not in ("layer", "global"):
            raise MethodError(f"ranking must be 'layer' or 'global', got {self.ranking!r}")


class PruningMethod(Method):
    name = "pruning"
    config_class = PruningConfig
    config: PruningConfig

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if not mask_linears(model, scorer=self.config.scorer, mode="topk"):
            raise MethodError(f"no prunable linear layers found in {type(model).__name__}")
        set_sparsity(model, self.config.initial_sparsity, self.config.ranking)
        return model

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        if self.config.scores_learning_rate is None:
            return None
        scores = [p for n, p in model.named_parameters() if n.endswith(".scores") and p.requires_grad]
        others = [p for n, p in model.named_parameters() if not n.endswith(".scores") and p.requires_grad]
        return [{"params": others}, {"params": scores, "lr": self.config.scores_learning_rate, "weight_decay": 0.0}]

    def callbacks(self) -> list[TrainerCallback]:
        return [SparsityScheduleCallback(self.config.schedule(), ranking=self.config.ranking)]

    def export(self, model: nn.Module) -> nn.Module:
        """Plain dense layers holding mask * W: loads in transformers, zeros included."""
        return export_dense(model)
