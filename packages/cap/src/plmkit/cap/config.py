"""CAP's options, with the reference scripts' defaults (spec cap.md 2.2).

Options whose reference value differs between the unstructured and the structured scripts default to None and
are resolved for the chosen engine (unstructured: w_u 0.1, w_s 10, T_kd 2; CAP-f: w_u 0.3, w_s 3, T_kd 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plmkit.core.pruning import MovementScoresConfig
from plmkit.core.training import MethodError

__all__ = ["BANKS", "ENGINES", "CAPConfig"]

ENGINES = ("cap-m", "cap-soft", "cap-f")
BANKS = ("pretrained", "finetuned", "snapshots")

# (unsupervised weight, supervised weight, distillation temperature) of the reference scripts.
_ENGINE_DEFAULTS = {"unstructured": (0.1, 10.0, 2.0), "structured": (0.3, 3.0, 1.0)}


def _bank_list(value: str, option: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip() and n.strip() != "none")
    unknown = sorted(set(names) - set(BANKS))
    if unknown:
        raise MethodError(f"{option}: unknown bank(s) {unknown}; choose from {list(BANKS)} or 'none'")
    return names


@dataclass
class CAPConfig(MovementScoresConfig):
    """Contrastive Pruning: a pruning engine plus contrastive terms against representation banks and KD.

    Loss (spec cap.md 2.1): w_ce L_task + w_kd T^2 KL(teacher || student) + sum over banks of
    (w_u L_unsup + w_s L_sup) (+ lambda_t L_reg for CAP-soft).
    """

    engine: str = field(
        default="cap-m",
        metadata={"help": "cap-m (movement top-k), cap-soft (soft movement, threshold + L1) or cap-f (heads/neurons)"},
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
                          "reference: sigmoid threshold schedule, final_lambda sets the sparsity reached)"},
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
        default="cls", metadata={"help": "cls (pooler output, as the classifier sees it) or mean (masked mean)"}
    )
    unsupervised_weight: float | None = field(
        default=None, metadata={"help": "w_u of the unsupervised term; None = 0.1 (unstructured) or 0.3 (cap-f)"}
    )
    supervised_weight: float | None = field(
        default=None, metadata={"help": "w_s of the supervised term; None = 10 (unstructured) or 3 (cap-f)"}
    )
    unsupervised_banks: str = field(
        default="pretrained,finetuned,snapshots",
        metadata={"help": "comma-separated banks the unsupervised term uses (pretrained, finetuned, snapshots, none)"},
    )
    supervised_banks: str = field(
        default="pretrained,finetuned,snapshots",
        metadata={"help": "comma-separated banks the supervised term uses (pretrained, finetuned, snapshots, none)"},
    )
    snapshot_mode: str = field(
        default="eval",
        metadata={"help": "eval: banks encoded without dropout; train: snapshots with dropout, as the unstructured code"},
    )
    bank_dtype: str = field(default="float16", metadata={"help": "storage dtype of the banks: float16, bfloat16, float32"})
    bank_storage: str = field(default="memory", metadata={"help": "memory (CPU RAM) or disk (memory-mapped files)"})
    bank_dir: str | None = field(
        default=None, metadata={"help": "folder of the disk banks; None = a temporary folder"}
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
        if self.engine not in ENGINES:
            raise MethodError(f"engine must be one of {list(ENGINES)}, got {self.engine!r}")
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
        if self.soft_sparsity not in ("target", "lambda"):
            raise MethodError(f"soft_sparsity must be 'target' or 'lambda', got {self.soft_sparsity!r}")
        if self.representation not in ("cls", "mean"):
            raise MethodError(f"representation must be 'cls' or 'mean', got {self.representation!r}")
        if self.snapshot_mode not in ("eval", "train"):
            raise MethodError(f"snapshot_mode must be 'eval' or 'train', got {self.snapshot_mode!r}")
        if self.bank_dtype not in ("float16", "bfloat16", "float32"):
            raise MethodError(f"bank_dtype must be float16, bfloat16 or float32, got {self.bank_dtype!r}")
        if self.bank_storage not in ("memory", "disk"):
            raise MethodError(f"bank_storage must be 'memory' or 'disk', got {self.bank_storage!r}")
        for option in ("unsupervised_banks", "supervised_banks"):
            _bank_list(getattr(self, option), option)
