"""plmkit-prompt-tuning: CP-Tuning (contrastive prompt tuning), UPT (unified prompt tuning) and verbalizer prompt
tuning on shared prompt machinery (templates with trainable prompt tokens, a masked-LM [MASK] read-out, anchors)."""

from plmkit.prompt_tuning.anchors import centroid_scores, nearest_scores
from plmkit.prompt_tuning.config import CPTuningConfig, PromptConfig, PromptTuningConfig, UPTConfig
from plmkit.prompt_tuning.ksmlm import OptionsKnowledgeRepository, ksmlm_examples
from plmkit.prompt_tuning.losses import pair_wise_cost_sensitive_loss
from plmkit.prompt_tuning.method import CPTuningMethod, PromptTuningMethod, UPTMethod
from plmkit.prompt_tuning.model import (
    PromptModel,
    PromptModelConfig,
    compute_anchors,
    encode_anchors,
    predict,
)
from plmkit.prompt_tuning.pov import label_word_ids, pov_template
from plmkit.prompt_tuning.sampler import ClassBalancedSampler
from plmkit.prompt_tuning.stage1 import UPTStage1Config, UPTStage1Task
from plmkit.prompt_tuning.templates import apply_template, compile_template, parse_template
from plmkit.prompt_tuning.weighting import TaskBalancedSampler, task_balanced_weights

__all__ = [
    "CPTuningConfig",
    "CPTuningMethod",
    "ClassBalancedSampler",
    "OptionsKnowledgeRepository",
    "PromptConfig",
    "PromptModel",
    "PromptModelConfig",
    "PromptTuningConfig",
    "PromptTuningMethod",
    "TaskBalancedSampler",
    "UPTConfig",
    "UPTMethod",
    "UPTStage1Config",
    "UPTStage1Task",
    "apply_template",
    "centroid_scores",
    "compile_template",
    "compute_anchors",
    "encode_anchors",
    "ksmlm_examples",
    "label_word_ids",
    "nearest_scores",
    "pair_wise_cost_sensitive_loss",
    "parse_template",
    "pov_template",
    "predict",
    "task_balanced_weights",
]
