"""CAP's options, with the defaults of the reference scripts (alibaba/AliceMind, ContrastivePruning/).

Options whose reference value differs between the unstructured and the structured scripts default to None and
are resolved for the chosen engine (unstructured: w_u 0.1, w_s 10, T_kd 2; CAP-f: w_u 0.3, w_s 3, T_kd 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plmkit.core.pruning import MovementScoresConfig
from plmkit.core.training import MethodError

__all__ = ["BANKS", "ENGINES", "CAPConfig"]

ENGINES = ("cap-m", "cap-soft", "cap-f")
BANKS = ("pretrained", "finetuned", "snapshots")

# (unsupervised weight, supervised weight, distillation temperature) of the reference scripts.
_ENGINE_DEFAULTS = {"unstructured": (0.1, 10.0, 2.0), "structured": (0.3, 3.0, 1.0)}


def _bank_list(value: Any, option: str) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(n, str) for n in value):
        raise MethodError(f"{option} must be a list of bank names, got {value!r}")
    names = tuple(n for n in value if n != "none")
    unknown = sorted(set(names) - set(BANKS))
    if unknown:
        raise MethodError(f"{option}: unknown bank(s) {unknown}; choose from {list(BANKS)} or 'none'")
    if len(names) != len(value) and names:
        raise MethodError(f"{option}: 'none' cannot be combined with banks, got {list(value)}")
    return names


def _all_banks() -> list[str]:
    return list(BANKS)


@dataclass
class CAPConfig(MovementScoresConfig):
    """Contrastive Pruning: a pruning engine plus contrastive terms against representation banks and KD.

    Loss (Xu et al. 2022, Sec. 3): w_ce L_task + w_kd T^2 KL(teacher || student) + sum over banks of
    (w_u L_unsup + w_s L_sup) (+ lambda_t L_reg for CAP-soft).
    """

    engine: str = field(
        default="cap-m",
        metadata={"help": "cap-m (movement top-k), cap-soft (soft movement, threshold + L1) or cap-f (heads/neurons)",
                  "choices": ENGINES},
    )
    sparsity: float = field(
        default=0.9,
        metadata={"help": "cap-m: final fraction of zeros per matrix; cap-f: final fraction of heads and FFN neurons"},
    )
    # --- unstructured schedule (CAP-m / CAP-soft) ---
    initial_warmup: float = field(
        default=0.2,
        metadata={"help": "fraction of the steps before pruning starts (reference: 2 x warmup_steps, ~0.2 on QQP)"},
    )
    final_warmup: float = field(
        default=0.3,
        metadata={"help": "fraction of the final steps at the final value (reference: 3 x warmup_steps, ~0.3 on QQP)"},
    )
    soft_sparsity: str = field(
        default="target",
        metadata={"help": "cap-soft: target (reach `sparsity`: global top-k of the scores, L1 kept) or lambda (the "
                          "reference: sigmoid threshold schedule, final_lambda sets the sparsity reached)",
                  "choices": ("target", "lambda")},
    )
    initial_threshold: float = field(default=0.0, metadata={"help": "cap-soft: sigmoid(score) threshold at the start"})
    final_threshold: float = field(default=0.1, metadata={"help": "cap-soft: final sigmoid(score) threshold"})
    final_lambda: float = field(
        default=190.0, metadata={"help": "cap-soft: final L1 weight; lambda_t = final_lambda * tau_t / final_threshold"}
    )
    # --- structured engine (CAP-f) ---
    pruning_step: float = field(
        default=0.1, metadata={"help": "cap-f: cumulative increment per pruning iteration (10%, 20%, ... sparsity)"}
    )
    min_heads_per_layer: int = field(default=1, metadata={"help": "cap-f: each layer keeps its top heads"})
    importance_batches: int = field(
        default=0, metadata={"help": "cap-f: training batches per importance pass; 0 = the whole training set"}
    )
    # --- teacher and distillation ---
    teacher: str | None = field(
        default=None, metadata={"help": "fine-tuned teacher folder; None = fine-tune one first (teacher_epochs)"}
    )
    teacher_epochs: float = field(
        default=3.0, metadata={"help": "epochs of plain fine-tuning for the teacher when --method.teacher is not given"}
    )
    ce_weight: float = field(default=0.1, metadata={"help": "weight w_ce of the task loss"})
    distill_weight: float = field(default=0.9, metadata={"help": "weight w_kd of the distillation loss; 0 = no KD"})
    distill_temperature: float | None = field(
        default=None, metadata={"help": "KD temperature T; None = 2 (unstructured) or 1 (cap-f) as the reference"}
    )
    # --- contrastive terms ---
    contrastive_temperature: float = field(default=0.1, metadata={"help": "temperature tau of the contrastive logits"})
    extra_examples: int = field(
        default=4096, metadata={"help": "candidates from other examples per bank: floor(extra / R) examples sampled"}
    )
    representation: str = field(
        default="cls",
        metadata={"help": "cls (pooler output, as the classifier sees it) or mean (masked mean)",
                  "choices": ("cls", "mean")},
    )
    unsupervised_weight: float | None = field(
        default=None, metadata={"help": "w_u of the unsupervised term; None = 0.1 (unstructured) or 0.3 (cap-f)"}
    )
    supervised_weight: float | None = field(
        default=None, metadata={"help": "w_s of the supervised term; None = 10 (unstructured) or 3 (cap-f)"}
    )
    unsupervised_banks: list[str] = field(
        default_factory=_all_banks,
        metadata={"help": "banks the unsupervised term uses: pretrained, finetuned, snapshots (or none)"},
    )
    supervised_banks: list[str] = field(
        default_factory=_all_banks,
        metadata={"help": "banks the supervised term uses: pretrained, finetuned, snapshots (or none)"},
    )
    snapshot_mode: str = field(
        default="eval",
        metadata={"help": "eval: banks encoded without dropout; train: snapshots with dropout, as the unstructured code",
                  "choices": ("eval", "train")},
    )
    bank_dtype: str = field(
        default="float16",
        metadata={"help": "storage dtype of the banks", "choices": ("float16", "bfloat16", "float32")},
    )
    bank_storage: str = field(
        default="memory",
        metadata={"help": "memory (CPU RAM, saved in checkpoints) or disk (memory-mapped files, reopened on resume)",
                  "choices": ("memory", "disk")},
    )
    bank_dir: str | None = field(
        default=None, metadata={"help": "folder of the disk banks; None = cap_banks/ in the run's output folder"}
    )

    def __post_init__(self) -> None:
        u, s, t = _ENGINE_DEFAULTS["structured" if self.engine == "cap-f" else "unstructured"]
        self.unsupervised_weight = u if self.unsupervised_weight is None else self.unsupervised_weight
        self.supervised_weight = s if self.supervised_weight is None else self.supervised_weight
        self.distill_temperature = t if self.distill_temperature is None else self.distill_temperature
        super().__post_init__()

    @property
    def structured(self) -> bool:
        return self.engine == "cap-f"

    @property
    def banks(self) -> dict[str, tuple[str, ...]]:
        """Which banks each term uses: {"unsupervised": (...), "supervised": (...)}."""
        return {
            "unsupervised": _bank_list(self.unsupervised_banks, "unsupervised_banks"),
            "supervised": _bank_list(self.supervised_banks, "supervised_banks"),
        }

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.initial_threshold <= self.final_threshold < 1.0:
            raise MethodError(
                f"thresholds must satisfy 0 <= initial_threshold <= final_threshold < 1, "
                f"got {self.initial_threshold}, {self.final_threshold}"
            )
        if not 0.0 < self.pruning_step <= 1.0:
            raise MethodError(f"pruning_step must be in (0, 1], got {self.pruning_step}")
        if self.min_heads_per_layer < 0 or self.importance_batches < 0:
            raise MethodError("min_heads_per_layer and importance_batches must be >= 0")
        if self.teacher_epochs <= 0 and self.teacher is None and self.distill_weight > 0:
            raise MethodError("teacher_epochs must be > 0 when no --method.teacher is given")
        for name in ("ce_weight", "distill_weight", "unsupervised_weight", "supervised_weight", "final_lambda"):
            if getattr(self, name) < 0:
                raise MethodError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("contrastive_temperature", "distill_temperature"):
            if getattr(self, name) <= 0:
                raise MethodError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.extra_examples < 0:
            raise MethodError(f"extra_examples must be >= 0, got {self.extra_examples}")
        for option in ("unsupervised_banks", "supervised_banks"):
            _bank_list(getattr(self, option), option)
