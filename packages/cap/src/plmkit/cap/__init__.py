"""CAP: Contrastive Pruning (Xu, Luo et al., AAAI 2022, arXiv 2112.07198) for plmkit.

Contrastive terms against representation banks of the pre-trained model (PrC), the fine-tuned teacher (FiC)
and snapshots (SnC), with distillation, on three pruning engines: CAP-m, CAP-soft (unstructured) and CAP-f
(heads and FFN neurons). See the package README.
"""

from plmkit.cap.banks import ExampleIndex, RepresentationBank
from plmkit.cap.config import CAPConfig
from plmkit.cap.engines import StructuredEngine, UnitMasks, UnstructuredEngine, pruning_sequence
from plmkit.cap.losses import contrastive_terms, distillation_loss, sample_extra, soft_movement_regularizer
from plmkit.cap.method import CAPMethod
from plmkit.cap.representations import RepresentationTap

__all__ = [
    "CAPConfig",
    "CAPMethod",
    "ExampleIndex",
    "RepresentationBank",
    "RepresentationTap",
    "StructuredEngine",
    "UnitMasks",
    "UnstructuredEngine",
    "contrastive_terms",
    "distillation_loss",
    "pruning_sequence",
    "sample_extra",
    "soft_movement_regularizer",
]
