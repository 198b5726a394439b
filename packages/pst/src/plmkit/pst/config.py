"""PST's options, with the reference code's defaults (spec pst.md 1.2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from plmkit.core.training import MethodConfig, MethodError

__all__ = ["PSTConfig"]


@dataclass
class PSTConfig(MethodConfig):
    """Parameter-efficient Sparse Training: which layers, the PST factors, the cubic sparsity schedule.

    Defaults are the reference's (r1 = r2 = 8, alpha1 = alpha2 = beta = 1, final sparsity 0.9, t_i = 0.1,
    t_f = 0.3, task head left untrained).
    """

    sparsity: float = field(default=0.9, metadata={"help": "final fraction of zeros in every pruned matrix, [0, 1)"})
    initial_sparsity: float = field(default=0.0, metadata={"help": "sparsity during the initial warm-up, [0, sparsity]"})
    initial_warmup: float = field(default=0.1, metadata={"help": "fraction t_i of the steps before pruning starts"})
    final_warmup: float = field(default=0.3, metadata={"help": "fraction t_f of the final steps held at the target sparsity"})
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
        for name in ("rank_uv", "rank_score"):
            if getattr(self, name) < 1:
                raise MethodError(f"{name} must be >= 1, got {getattr(self, name)}")

    def target_patterns(self) -> tuple[str, ...] | None:
        """The ``targets`` option as patterns, or None for the default."""
        patterns = tuple(p.strip() for p in self.targets.split(",") if p.strip())
        return patterns or None
