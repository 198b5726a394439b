"""plmkit-vlp: SemVLP (Li et al., "SemVLP: Vision-Language Pre-training by Aligning Semantics at Multiple Levels",
2021) on plmkit's core: the models (`SemVLPConfig`, `SemVLPModel`, `SemVLPForPreTraining`,
`SemVLPForSequenceClassification`), the `semvlp` method (the pre-training objectives and the single/two-stream
schedule), the `image_text` and `image_text_classification` tasks, and the `emoji` builtin data."""

from plmkit.vlp.configuration import SemVLPConfig
from plmkit.vlp.modeling import (
    SemVLPForPreTraining,
    SemVLPForSequenceClassification,
    SemVLPModel,
    SemVLPPreTrainingOutput,
    attention_masks,
    register,
)

__all__ = [
    "SemVLPConfig",
    "SemVLPForPreTraining",
    "SemVLPForSequenceClassification",
    "SemVLPModel",
    "SemVLPPreTrainingOutput",
    "attention_masks",
    "register",
]
