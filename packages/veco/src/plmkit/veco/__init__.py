"""plmkit-veco: VECO (Luo et al., ACL 2021), a cross-lingual encoder whose layers take a plug-in cross-attention,
pre-trained with CA-MLM on parallel pairs and fine-tuned as a plug-out (XLM-R) or plug-in encoder, or as an
encoder-decoder for generation (exported to BART)."""

from plmkit.veco.configuration import VecoConfig
from plmkit.veco.modeling import (
    OBJECTIVES,
    VecoForConditionalGeneration,
    VecoForPreTraining,
    VecoForSequenceClassification,
    VecoModel,
)
from plmkit.veco.tokenization import VecoTokenizer

__all__ = [
    "OBJECTIVES",
    "VecoConfig",
    "VecoForConditionalGeneration",
    "VecoForPreTraining",
    "VecoForSequenceClassification",
    "VecoModel",
    "VecoTokenizer",
]
