"""PST's options, with the reference code's defaults (spec pst.md 1.2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from plmkit.core.pruning import CubicScheduleConfig
from plmkit.core.training import MethodError

__all__ = ["PSTConfig"]


@dataclass
class PSTConfig(CubicScheduleConfig):
    """Parameter-efficient Sparse Training: which layers, the PST factors, the cubic sparsity schedule.

    Defaults are the reference's (r1 = r2 = 8, alpha1 = alpha2 = beta = 1, final sparsity 0.9, t_i = 0.1,
    t_f = 0.3, task head left untrained).
    """

    rank_uv: int = field(default=8, metadata={"help": "rank r1 of the weight update U V"})
    rank_score: int = field(default=8, metadata={"help": "rank r2 of the data-driven score A B"})
    alpha1: float = field(default=1.0, metadata={"help": "weight of the low-rank score A B"})
    alpha2: float = field(default=1.0, metadata={"help": "weight of the row/column score R 1^T + 1 C^T"})
    beta: float = field(default=1.0, metadata={"help": "scale of the weight update U V"})
    train_head: bool = field(
        default=False,
        metadata={"help": "also train the task head (pooler, classifier); the reference leaves it at its initialisation"},
    )
    split_fused_qkv: bool = field(
        default=True,
        metadata={"help": "GPT-2 c_attn: separate factors and top-k for q, k and v, as the reference's split layers"},
    )
    targets: str = field(
        default="",
        metadata={"help": "comma-separated fnmatch patterns of the linear layers to prune; empty = transformer blocks"},
    )

    def validate(self) -> None:
        super().validate()
        for name in ("rank_uv", "rank_score"):
            if getattr(self, name) < 1:
                raise MethodError(f"{name} must be >= 1, got {getattr(self, name)}")

    def target_patterns(self) -> tuple[str, ...] | None:
        """The ``targets`` option as patterns, or None for the default."""
        patterns = tuple(p.strip() for p in self.targets.split(",") if p.strip())
        return patterns or None
