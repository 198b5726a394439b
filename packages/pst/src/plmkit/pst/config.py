"""PST's options, with the reference code's defaults (alibaba/AliceMind `S4/PST`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from plmkit.core.pruning import CubicScheduleConfig
from plmkit.core.training import MethodError

__all__ = ["PSTConfig", "TRAIN_HEAD"]

TRAIN_HEAD = ("auto", "true", "false")


@dataclass
class PSTConfig(CubicScheduleConfig):
    """Parameter-efficient Sparse Training: which layers, the PST factors, the cubic sparsity schedule.

    Defaults are the reference's (r1 = r2 = 8, alpha1 = alpha2 = beta = 1, final sparsity 0.9, t_i = 0.1,
    t_f = 0.3), except that a newly initialised task head trains (the reference never trains the head, which leaves
    a new task's random classifier random; ``train_head=false`` restores that).
    """

    rank_uv: int = field(default=8, metadata={"help": "rank r1 of the weight update U V"})
    rank_score: int = field(default=8, metadata={"help": "rank r2 of the data-driven score A B"})
    alpha1: float = field(default=1.0, metadata={"help": "weight of the low-rank score A B"})
    alpha2: float = field(default=1.0, metadata={"help": "weight of the row/column score R 1^T + 1 C^T"})
    beta: float = field(default=1.0, metadata={"help": "scale of the weight update U V"})
    train_head: str = field(
        default="auto",
        metadata={"help": "also train the task head (pooler, classifier): auto = when it is newly initialised (a "
                          "new task); true; false = the reference, which leaves the head as loaded",
                  "choices": TRAIN_HEAD},
    )
    split_fused_qkv: bool = field(
        default=True,
        metadata={"help": "GPT-2 c_attn: separate factors and top-k for q, k and v, as the reference's split layers"},
    )
    targets: list[str] = field(
        default_factory=list,
        metadata={"help": "fnmatch patterns of the linear layers to prune (module names); empty = the transformer "
                          "blocks"},
    )

    def __post_init__(self) -> None:
        if isinstance(self.train_head, bool):  # YAML `train_head: true`
            self.train_head = str(self.train_head).lower()
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        if isinstance(self.targets, str) or not all(isinstance(t, str) for t in self.targets):
            raise MethodError(f"targets must be a list of fnmatch patterns, got {self.targets!r}")
        for name in ("rank_uv", "rank_score"):
            if getattr(self, name) < 1:
                raise MethodError(f"{name} must be >= 1, got {getattr(self, name)}")

    def target_patterns(self) -> tuple[str, ...] | None:
        """The ``targets`` option as patterns, or None for the default."""
        patterns = tuple(p.strip() for p in self.targets if p.strip())
        return patterns or None
