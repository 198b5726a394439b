"""CAP: Contrastive Pruning (Xu, Luo et al., AAAI 2022, arXiv 2112.07198) for plmkit.

Contrastive terms against representation banks of the pre-trained model (PrC), the fine-tuned teacher (FiC)
and snapshots (SnC), with distillation, on three pruning engines: CAP-m, CAP-soft (unstructured) and CAP-f
(heads and FFN neurons, the core's ``UnitGates``). See the package README.
"""

from plmkit.cap.banks import RepresentationBank
from plmkit.cap.config import CAPConfig
from plmkit.cap.engines import StructuredEngine, UnstructuredEngine, pruning_sequence
from plmkit.cap.losses import contrastive_terms, sample_extra, soft_movement_regularizer
from plmkit.cap.method import CAPMethod
from plmkit.cap.representations import RepresentationTap

__all__ = [
    "CAPConfig",
    "CAPMethod",
    "RepresentationBank",
    "RepresentationTap",
    "StructuredEngine",
    "UnstructuredEngine",
    "contrastive_terms",
    "pruning_sequence",
    "sample_extra",
    "soft_movement_regularizer",
]
