"""Options of the prompt methods: the shared prompt options, CP-Tuning's and verbalizer prompt tuning's.

Defaults follow the official CP-Tuning code (alibaba/EasyNLP `easynlp/fewshot_learning/`) where it has them
(margin 0.4, scale 64, cost ratio 1, 1-NN over training anchors); the rest are the choices listed in the README.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plmkit.core.training import MethodConfig, MethodError
from plmkit.prompt_tuning.templates import parse_template

__all__ = ["CPTuningConfig", "PREDICTIONS", "PromptConfig", "PromptTuningConfig"]

PREDICTIONS = ("nearest", "centroid")


@dataclass
class PromptConfig(MethodConfig):
    """Shared prompt options: the template around the input text and its trainable prompt tokens."""

    template: str = field(
        default="{text} {prompt} {mask}",
        metadata={
            "help": "input layout: {text} (or {text_a}/{text_b} for pairs), {prompt} (the trainable prompt tokens), "
            "exactly one {mask}, and literal words, e.g. '{text} It was {mask} .'"
        },
    )
    num_prompt_tokens: int = field(
        default=4, metadata={"help": "trainable prompt tokens that each {prompt} in the template expands to"}
    )
    max_length: int | None = field(
        default=None,
        metadata={"help": "longest templated input; the text is cut, never the prompt or [MASK] (default: the model's limit)"},
    )

    def validate(self) -> None:
        if self.num_prompt_tokens < 0:
            raise MethodError(f"num_prompt_tokens must be >= 0, got {self.num_prompt_tokens}")
        if self.max_length is not None and self.max_length < 4:
            raise MethodError(f"max_length must be >= 4 (or unset), got {self.max_length}")
        parse_template(self.template, self.num_prompt_tokens)


@dataclass
class CPTuningConfig(PromptConfig):
    """CP-Tuning: [MASK] features from the masked-LM head's transform, trained with the pair-wise cost-sensitive
    contrastive loss (PCCL) on class-balanced batches, predicted by nearest training anchor; no verbalizer."""

    margin: float = field(default=0.4, metadata={"help": "PCCL margin m (relaxation of the pair similarities)"})
    scale: float = field(default=64.0, metadata={"help": "PCCL scale gamma"})
    cost_ratio: float = field(default=1.0, metadata={"help": "PCCL cost ratio k: positive-pair weights are divided by k"})
    mlm_weight: float = field(
        default=0.0,
        metadata={"help": "lambda of the auxiliary masked-LM term on masked input-text tokens (0 = off, as the official code)"},
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "share of text tokens masked for the auxiliary MLM"})
    prediction: str = field(
        default="nearest", metadata={"help": "'nearest': label of the most similar training anchor; 'centroid': nearest class mean"}
    )
    balanced_batches: bool = field(
        default=True, metadata={"help": "class-balanced training batches, so every batch has positive and negative pairs"}
    )

    def validate(self) -> None:
        super().validate()
        if self.margin < 0 or self.margin >= 1:
            raise MethodError(f"margin must be in [0, 1), got {self.margin}")
        if self.scale <= 0:
            raise MethodError(f"scale must be > 0, got {self.scale}")
        if self.cost_ratio <= 0:
            raise MethodError(f"cost_ratio must be > 0, got {self.cost_ratio}")
        if self.mlm_weight < 0:
            raise MethodError(f"mlm_weight must be >= 0, got {self.mlm_weight}")
        if not 0 < self.mlm_probability < 1:
            raise MethodError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.prediction not in PREDICTIONS:
            raise MethodError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")


@dataclass
class PromptTuningConfig(PromptConfig):
    """Prompt-based fine-tuning with a verbalizer (LM-BFF style): cross-entropy over the label words' masked-LM
    scores at [MASK]."""

    template: str = field(
        default="{text} It was {mask} .",
        metadata={"help": "input layout, as for cp_tuning; the default is LM-BFF's sentiment template"},
    )
    num_prompt_tokens: int = field(default=0, metadata={"help": "trainable prompt tokens per {prompt} (0: manual template)"})
    label_words: str = field(
        default="", metadata={"help": "comma-separated verbalizer: one single-token word per label, in label order"}
    )

    def validate(self) -> None:
        super().validate()
        if not self.words():
            raise MethodError("prompt_tuning needs --method.label_words: one word per label, comma-separated (e.g. 'terrible,great')")

    def words(self) -> list[str]:
        return [w.strip() for w in self.label_words.split(",") if w.strip()]
