"""Options of the two methods. Every choice the paper (Li et al., ACL 2022) leaves open is an option here; the
README's "Deviations and decisions" says which default was taken and why."""

from __future__ import annotations

from dataclasses import dataclass, field

from plmkit.core.training import MethodConfig, MethodError

__all__ = ["ALGORITHMS", "DynamicSparsificationConfig", "SETTINGS", "StructuredPruningConfig"]

ALGORITHMS = ("first_order", "movement", "l0")
SETTINGS = ("shared", "per_language")
SCOPES = ("layer", "global")


def _check_fraction(name: str, value: float, upper_open: bool = True) -> None:
    if not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        raise MethodError(f"{name} must be in [0, {'1)' if upper_open else '1]'}, got {value}")


@dataclass
class StructuredPruningConfig(MethodConfig):
    """Prune attention heads and FFN neurons (first-order, movement or L0), with one mask or one per language."""

    sparsity: float = field(
        default=0.5, metadata={"help": "fraction of attention heads and of FFN neurons to prune, in [0, 1)"}
    )
    algorithm: str = field(
        default="first_order",
        metadata={"help": "first_order (Michel et al. gradient importance), movement (learned unit scores, STE), "
                          "or l0 (hard-concrete gates with a Lagrangian sparsity target)", "choices": ALGORITHMS},
    )
    iterations: int = field(
        default=1,
        metadata={"help": "first_order only: 1 = one-shot (prune once, then retrain); n > 1 = prune n times to "
                          "cumulative sparsities s/n, 2s/n, ..., s with retraining in between"},
    )
    ranking: str = field(
        default="layer",
        metadata={"help": "layer: prune the same fraction in every layer; global: one ranking", "choices": SCOPES},
    )
    min_heads_per_layer: int = field(
        default=1, metadata={"help": "most important heads every layer keeps (matters for global ranking)"}
    )
    initial_warmup: float = field(
        default=0.2, metadata={"help": "fraction of training steps of dense fine-tuning before the first pruning"}
    )
    final_warmup: float = field(
        default=0.3,
        metadata={"help": "fraction of final steps trained with the final binary mask (iterative first_order: "
                          "the last pruning happens here; movement/l0: masks freeze here)"},
    )
    importance_batches: int = field(
        default=32, metadata={"help": "training batches summed for first-order importance at each pruning step"}
    )
    scores_learning_rate: float = field(
        default=1e-2, metadata={"help": "movement scores / L0 log-alphas and Lagrange multipliers: learning rate"}
    )
    l0_init: float = field(default=3.0, metadata={"help": "initial log-alpha of the L0 gates (3.0: ~all open)"})
    setting: str = field(
        default="shared",
        metadata={"help": "shared: one mask for all languages; per_language: one mask per language over shared "
                          "weights, chosen per example by the data's `language` column", "choices": SETTINGS},
    )
    languages: list[str] = field(
        default_factory=list,
        metadata={"help": "per_language: the language codes of the `language` column, in mask-row order (e.g. "
                          "en,de,fr); integer values in the column are row indices"},
    )
    export_language: str | None = field(
        default=None, metadata={"help": "per_language: which language's mask `export` compacts the model with"}
    )

    def validate(self) -> None:
        _check_fraction("sparsity", self.sparsity)
        if self.iterations < 1:
            raise MethodError(f"iterations must be >= 1, got {self.iterations}")
        if self.iterations > 1 and self.algorithm != "first_order":
            raise MethodError(f"iterations > 1 applies to algorithm first_order only, not {self.algorithm!r}")
        if self.min_heads_per_layer < 0:
            raise MethodError(f"min_heads_per_layer must be >= 0, got {self.min_heads_per_layer}")
        _check_fraction("initial_warmup", self.initial_warmup)
        _check_fraction("final_warmup", self.final_warmup)
        if self.initial_warmup + self.final_warmup >= 1.0:
            raise MethodError(
                f"initial_warmup + final_warmup must be below 1, got {self.initial_warmup} + {self.final_warmup}"
            )
        if self.importance_batches < 1:
            raise MethodError(f"importance_batches must be >= 1, got {self.importance_batches}")
        if self.scores_learning_rate <= 0:
            raise MethodError(f"scores_learning_rate must be > 0, got {self.scores_learning_rate}")
        if self.setting == "per_language":
            if len(self.languages) < 2 or len(set(self.languages)) != len(self.languages):
                raise MethodError(
                    f"setting per_language needs at least two distinct --method.languages, got {self.languages}"
                )
            if self.export_language is not None and self.export_language not in self.languages:
                raise MethodError(f"export_language {self.export_language!r} is not in languages {self.languages}")
        elif self.languages or self.export_language is not None:
            raise MethodError("languages and export_language apply to setting per_language only")

    @property
    def num_masks(self) -> int:
        return len(self.languages) if self.setting == "per_language" else 1


@dataclass
class DynamicSparsificationConfig(MethodConfig):
    """Dynamic Sparsification: train once over nested sub-networks, then compact at any sparsity."""

    sparsity: float = field(
        default=0.5, metadata={"help": "sparsity that evaluation after training and `export` use, in [0, 1)"}
    )
    max_sparsity: float = field(default=0.9, metadata={"help": "largest sparsity trained (the sandwich's top)"})
    min_sparsity: float = field(default=0.0, metadata={"help": "smallest sparsity trained (the sandwich's bottom)"})
    sparsity_step: float = field(default=0.1, metadata={"help": "grid spacing of the sparsities sampled between"})
    num_sampled: int = field(
        default=3, metadata={"help": "sparsities per step, always including min_sparsity and max_sparsity (>= 2)"}
    )
    ranking: str = field(
        default="layer",
        metadata={"help": "layer: same fraction per layer; global: one ranking over layers", "choices": SCOPES},
    )
    min_heads_per_layer: int = field(default=1, metadata={"help": "most important heads every layer keeps"})
    ordering_warmup: float = field(
        default=0.1,
        metadata={"help": "fraction of steps of dense fine-tuning before the unit ordering is computed and "
                          "sub-networks are trained"},
    )
    importance_batches: int = field(
        default=32, metadata={"help": "training batches summed for the first-order importance ordering"}
    )
    distill: bool = field(
        default=True, metadata={"help": "sub-networks learn from the smallest-sparsity network's logits (KD)"}
    )
    temperature: float = field(default=1.0, metadata={"help": "distillation temperature"})
    slice_subnetworks: bool = field(
        default=True,
        metadata={"help": "the sampled sub-networks other than the smallest compute with only their kept units' "
                          "weights (a sparser one costs less; same numbers as the gated full-width forward up to "
                          "float summation order); false: gated full-width forwards. Models whose blocks cannot be "
                          "sliced (gated FFN, grouped key/value heads) use the gates, with a warning"},
    )

    def validate(self) -> None:
        for name in ("sparsity", "max_sparsity", "min_sparsity", "ordering_warmup"):
            _check_fraction(name, getattr(self, name))
        if self.min_sparsity >= self.max_sparsity:
            raise MethodError(f"min_sparsity {self.min_sparsity} must be below max_sparsity {self.max_sparsity}")
        if not 0.0 < self.sparsity_step <= self.max_sparsity - self.min_sparsity:
            raise MethodError(
                f"sparsity_step must be in (0, max_sparsity - min_sparsity], got {self.sparsity_step}"
            )
        if self.num_sampled < 2:
            raise MethodError(f"num_sampled must be >= 2 (the smallest and the largest), got {self.num_sampled}")
        if self.min_heads_per_layer < 0:
            raise MethodError(f"min_heads_per_layer must be >= 0, got {self.min_heads_per_layer}")
        if self.importance_batches < 1:
            raise MethodError(f"importance_batches must be >= 1, got {self.importance_batches}")
        if self.temperature <= 0:
            raise MethodError(f"temperature must be > 0, got {self.temperature}")

    def grid(self) -> list[float]:
        """The sparsities training samples from: min_sparsity, +step, ..., max_sparsity (inclusive)."""
        n = int(round((self.max_sparsity - self.min_sparsity) / self.sparsity_step))
        points = [round(self.min_sparsity + i * self.sparsity_step, 6) for i in range(n + 1)]
        return sorted({*(p for p in points if p < self.max_sparsity), self.max_sparsity})
