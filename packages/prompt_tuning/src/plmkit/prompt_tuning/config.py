"""Options of the prompt methods: the shared prompt options, CP-Tuning's and verbalizer prompt tuning's.

Defaults follow the official CP-Tuning code (alibaba/EasyNLP `easynlp/fewshot_learning/`) where it has them
(margin 0.4, scale 64, cost ratio 1, 1-NN over training anchors); the rest are the choices listed in the README.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plmkit.core.training import MethodConfig, MethodError
from plmkit.prompt_tuning.pov import pov_template
from plmkit.prompt_tuning.templates import parse_template

__all__ = ["CPTuningConfig", "PREDICTIONS", "PromptConfig", "PromptTuningConfig", "SELF_ENSEMBLE_PROMPTS", "UPTConfig"]

PREDICTIONS = ("nearest", "centroid")
# CP-Tuning's PCCL pulls together the examples of a class within a batch. Measured with MiniLM on 1,024 TREC
# questions (6 classes), 128 steps, lr 1e-4, fp32, one seed: batches of 16 (2-3 examples of each class) 67.1% test
# accuracy, of 24 (4 of each) 87.9%, of 48 (8 of each) 88.1%, fine-tuning (batch 16) 90.7%; few-shot (K = 16 per
# class) batches of 8 (2 of each of 4 classes) were 13-33 points below fine-tuning, of 48 within noise (README, trec
# sweep). So by default a batch must hold every class at least this many times.
MIN_PER_CLASS = 4


def _check_list(name: str, value: object) -> None:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise MethodError(f"{name} is a list of words (YAML: [terrible, great]; flag: --method.{name} terrible,great), "
                          f"got {value!r}")


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
    """CP-Tuning: contrastive prompt tuning (PCCL on [MASK] features), anchor-based prediction, no verbalizer.

    [MASK] features from the masked-LM head's transform, trained with the pair-wise cost-sensitive contrastive loss
    (PCCL) on class-balanced batches, predicted by the nearest training anchor (the reference's prediction) or by the
    nearest class centroid of the anchors. Which is better depends on the anchors per class (README, trec): with 16
    per class centroids were never worse and 4.8-6.9 points better at small budgets; with about 170 per class the
    nearest anchor was 8.2 points better on the same trained model."""

    margin: float = field(default=0.4, metadata={"help": "PCCL margin m (relaxation of the pair similarities)"})
    scale: float = field(default=64.0, metadata={"help": "PCCL scale gamma"})
    cost_ratio: float = field(default=1.0, metadata={"help": "PCCL cost ratio k: positive-pair weights are divided by k"})
    mlm_weight: float = field(
        default=0.0,
        metadata={"help": "lambda of the auxiliary masked-LM term on masked input-text tokens (0 = off, as the official code)"},
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "share of text tokens masked for the auxiliary MLM"})
    prediction: str = field(
        default="nearest",
        metadata={"help": "'nearest': label of the most similar training anchor (the reference's); 'centroid': "
                          "nearest class mean of the anchors (better few-shot: 16 anchors per class)",
                  "choices": PREDICTIONS},
    )
    balanced_batches: bool = field(
        default=True, metadata={"help": "class-balanced training batches, so every batch has positive and negative pairs"}
    )
    min_per_class: int = field(
        default=MIN_PER_CLASS,
        metadata={"help": "stop with an error before training when a training batch cannot hold every class this "
                          "many times (PCCL learns from the pairs within a batch; 0 = no check)"},
    )

    def validate(self) -> None:
        super().validate()
        if self.min_per_class < 0:
            raise MethodError(f"min_per_class must be >= 0 (0 = no check), got {self.min_per_class}")
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


@dataclass
class PromptTuningConfig(PromptConfig):
    """Prompt-based fine-tuning with a verbalizer (LM-BFF style).

    Cross-entropy over the label words' masked-LM scores at [MASK]."""

    template: str = field(
        default="{text} It was {mask} .",
        metadata={"help": "input layout, as for cp_tuning; the default is LM-BFF's sentiment template"},
    )
    num_prompt_tokens: int = field(default=0, metadata={"help": "trainable prompt tokens per {prompt} (0: manual template)"})
    label_words: list[str] = field(
        default_factory=list,
        metadata={"help": "the verbalizer: one single-token word per label, in label order (flag: 'terrible,great'); "
                          "empty = the label names, when each is one token"},
    )

    def validate(self) -> None:
        super().validate()
        _check_list("label_words", self.label_words)

    def words(self) -> list[str]:
        return [w.strip() for w in self.label_words if w.strip()]


# UPT-SE (Wang et al., 2022, Sec. 4.4): the paper's Table 5 prompts are not public; these five hand-written
# (prompt, options expression) pairs stand in for them. Variant j uses alternative j of each label word.
SELF_ENSEMBLE_PROMPTS: tuple[tuple[str, str], ...] = (
    ("It is {mask} .", "Is it {options} ?"),
    ("It was {mask} .", "Was it {options} ?"),
    ("The answer is {mask} .", "{options} ?"),
    ("In short , {mask} .", "Which one : {options} ?"),
    ("All in all , it is {mask} .", "Options : {options} ."),
)


SELF_ENSEMBLE_CHOICES = (0, *range(2, len(SELF_ENSEMBLE_PROMPTS) + 1))


@dataclass
class UPTConfig(MethodConfig):
    """UPT (unified prompt tuning): POV inputs, full-vocabulary loss at [MASK], label-word prediction.

    Prompt-Options-Verbalizer inputs, cross-entropy over the whole vocabulary at [MASK], prediction restricted to
    the label words. Stage 1 (multi-task training on dissimilar sources with
    Eq. 3 task-balanced sampling plus lambda * KSMLM) is `plmkit train --task upt_stage1 --task.sources ...
    --method upt`; stage 2 (K-shot tuning on the target) is `plmkit train --method upt`, starting from stage 1's
    folder."""

    label_words: list[str] = field(
        default_factory=list,
        metadata={"help": "stage 2: the target's label words, in label order (flag: 'terrible,great'). Within one "
                          "item, 'a|b' lists UPT-SE alternatives (variant j takes alternative j mod count), e.g. "
                          "'terrible|bad,great|good'. Multi-token words are scored by their first sub-token. Empty = "
                          "the label names, when each is one token"},
    )
    prompt: str = field(default="It is {mask} .", metadata={"help": "the prompt P, with exactly one {mask}"})
    options: str = field(default="Is it {options} ?", metadata={"help": "the options expression O; {options} lists every label word"})
    pair: bool = field(default=False, metadata={"help": "sentence-pair inputs: the text part is '{text_a} {text_b}'"})
    self_ensemble: int = field(
        default=0,
        metadata={"help": "UPT-SE: number of built-in prompt/options variants (0 = plain UPT with --method.prompt)",
                  "choices": SELF_ENSEMBLE_CHOICES},
    )
    max_length: int | None = field(
        default=None, metadata={"help": "longest POV input; the text is cut, never the options or the prompt"}
    )
    gamma: float = field(default=0.001, metadata={"help": "stage 1: gamma of the task-balanced weights (Eq. 3)"})
    ksmlm_weight: float = field(default=0.1, metadata={"help": "stage 1: lambda, the weight of the KSMLM loss"})
    ksmlm_share: float = field(
        default=0.25,
        metadata={"help": "stage 1: share of every batch given to KSMLM examples (needs --task.okr; 0 = UPT without "
                          "KSMLM)"},
    )

    def validate(self) -> None:
        _check_list("label_words", self.label_words)
        if self.max_length is not None and self.max_length < 8:
            raise MethodError(f"max_length must be >= 8 (or unset), got {self.max_length}")
        if self.gamma <= 0:
            raise MethodError(f"gamma must be > 0, got {self.gamma}")
        if self.ksmlm_weight < 0:
            raise MethodError(f"ksmlm_weight must be >= 0, got {self.ksmlm_weight}")
        if not 0 <= self.ksmlm_share < 1:
            raise MethodError(f"ksmlm_share must be in [0, 1), got {self.ksmlm_share}")
        if self.words():
            if len(self.words()) < 2:
                raise MethodError("--method.label_words needs one word per label, comma-separated (e.g. 'terrible,great')")
            for template, words in zip(*self.pov(), strict=True):
                parse_template(template, 0)
                if len(set(words)) != len(words):
                    raise MethodError(f"label words {words} repeat a word")
        else:
            pov_template(["a", "b"], self.prompt, self.options)

    def words(self) -> list[list[str]]:
        """Each label's alternatives: ['terrible|bad', 'great|good'] -> [['terrible', 'bad'], ['great', 'good']]."""
        return [[a.strip() for a in w.split("|") if a.strip()] for w in self.label_words if w.strip()]

    def pov(self, label_words: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
        """The POV templates and their label words: one (plain UPT) or `self_ensemble` variants (UPT-SE).
        `label_words` (one per label) stand in for an empty `--method.label_words`."""
        variants = SELF_ENSEMBLE_PROMPTS[: self.self_ensemble] if self.self_ensemble else ((self.prompt, self.options),)
        alternatives = self.words() or [[w] for w in label_words or []]
        templates, label_words = [], []
        for j, (prompt, expression) in enumerate(variants):
            words = [alts[j % len(alts)] for alts in alternatives]
            templates.append(pov_template(words, prompt, expression, self.pair))
            label_words.append(words)
        return templates, label_words
