"""CAPT: contrastive pre-training (Luo et al., "Rethinking Denoised Auto-Encoding in Language Pre-Training",
EMNLP 2021; arXiv 2010.06351) on plmkit's masked_lm task, and on an image-text task (plmkit-vlp's image_text).

    from plmkit.capt import CAPTConfig, CAPTMethod
    trainer = plmkit.core.training.Trainer(model, args, method=CAPTMethod(CAPTConfig(temperature=0.1)), task=task, ...)
"""

from plmkit.capt.config import POOLING, CAPTConfig
from plmkit.capt.losses import FeatureQueue, ProjectionHead, alignment, gather_with_grad, uniformity
from plmkit.capt.method import CONTRACT_CASE, IMAGE_TEXT_CASE, PROJECTION, CAPTMethod, clean_ids, hidden_size

__all__ = [
    "CAPTConfig",
    "CAPTMethod",
    "CONTRACT_CASE",
    "FeatureQueue",
    "IMAGE_TEXT_CASE",
    "POOLING",
    "PROJECTION",
    "ProjectionHead",
    "alignment",
    "clean_ids",
    "gather_with_grad",
    "hidden_size",
    "uniformity",
]
