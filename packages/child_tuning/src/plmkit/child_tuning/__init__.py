"""Child-Tuning (Xu, Luo et al., "Raise a Child in Large Language Model: Towards Effective and Generalizable
Fine-tuning", EMNLP 2021) for plmkit: fine-tune only a child network by masking gradients before each optimizer
step, with a fresh random mask (Child-Tuning_F) or a fixed mask of the highest-Fisher parameters (Child-Tuning_D).
"""

from plmkit.child_tuning.config import ChildTuningConfig
from plmkit.child_tuning.fisher import fisher_mask, fisher_scores, keep_threshold
from plmkit.child_tuning.masks import FMaskSampler, apply_fixed_mask_, matching_parameters
from plmkit.child_tuning.method import ChildTuningMethod, fisher_batches

__all__ = [
    "ChildTuningConfig",
    "ChildTuningMethod",
    "FMaskSampler",
    "apply_fixed_mask_",
    "fisher_batches",
    "fisher_mask",
    "fisher_scores",
    "keep_threshold",
    "matching_parameters",
]
