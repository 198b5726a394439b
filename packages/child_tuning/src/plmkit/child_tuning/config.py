"""Options of Child-Tuning (Xu, Luo et al., "Raise a Child in Large Language Model", EMNLP 2021).

Defaults follow the authors' code (alibaba/AliceMind, `ChildTuning/`); where it differs from the paper the paper's
reading is an option (package README, "Deviations and decisions").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from plmkit.core.training import MethodConfig, MethodError

__all__ = ["ChildTuningConfig", "DEFAULT_PATTERNS", "MODES"]

MODES = ("F", "D")

# Which tensors each mode touches when `param_pattern` is None: the reference masks every parameter in F mode and
# scores/masks the names containing 'layer' in D mode (BERT/RoBERTa/XLM-R encoder blocks; case-sensitive, so the
# embeddings' `LayerNorm`, the pooler and the classifier always get full gradients).
DEFAULT_PATTERNS = {"F": "", "D": "layer"}


@dataclass
class ChildTuningConfig(MethodConfig):
    """Child-Tuning: update only a child network by masking gradients (F: random each step, D: fixed by Fisher)."""

    mode: str = field(
        default="D",
        metadata={"help": "F (task-free: fresh Bernoulli(reserve_p) mask every step) or D (task-driven: fixed mask "
                          "of the top reserve_p fraction by Fisher information)", "choices": MODES},
    )
    reserve_p: float = field(
        default=0.3,
        metadata={"help": "fraction of gradient entries kept, in (0, 1]: p_F or p_D of the paper; 1 = vanilla"},
    )
    param_pattern: str | None = field(
        default=None,
        metadata={"help": "regex (re.search, case-sensitive) over parameter names: the tensors that are masked "
                          "(and, in D, scored); the others always get full gradients. None = the reference: every "
                          "parameter in F, names containing 'layer' (the encoder blocks) in D"},
    )
    rescale: bool | None = field(
        default=None,
        metadata={"help": "divide kept gradients by reserve_p (the paper's CT_F update, E[g~] = g). None = the reference: "
                          "F rescales, D does not"},
    )
    per_example_fisher: bool = field(
        default=False,
        metadata={"help": "D: average squared per-example gradients (the paper's Fisher definition) instead of squared "
                          "mini-batch-mean gradients (the reference code); one backward per example, slower"},
    )
    fisher_grad_clip: float | None = field(
        default=None,
        metadata={"help": "D: clip each scored tensor's gradient to this L2 norm before squaring; None = the "
                          "run's max_grad_norm (the reference), 0 = no clipping"},
    )
    seed: int | None = field(
        default=None,
        metadata={"help": "F: seed of the mask stream (its own generator, identical on every process); "
                          "None = the run's --seed"},
    )

    def validate(self) -> None:
        if not 0.0 < self.reserve_p <= 1.0:
            raise MethodError(f"child_tuning: reserve_p must be in (0, 1], got {self.reserve_p}")
        if self.fisher_grad_clip is not None and self.fisher_grad_clip < 0:
            raise MethodError(f"child_tuning: fisher_grad_clip must be >= 0 (0 = off), got {self.fisher_grad_clip}")
        if self.param_pattern is not None:
            try:
                re.compile(self.param_pattern)
            except re.error as err:
                raise MethodError(f"child_tuning: param_pattern {self.param_pattern!r} is not a regex: {err}") from err

    @property
    def pattern(self) -> str:
        """The regex actually used: `param_pattern`, or the reference's default for the mode."""
        return DEFAULT_PATTERNS[self.mode] if self.param_pattern is None else self.param_pattern

    @property
    def rescales(self) -> bool:
        return self.mode == "F" if self.rescale is None else self.rescale
