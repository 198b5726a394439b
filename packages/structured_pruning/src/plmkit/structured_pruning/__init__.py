"""Structured pruning of (multilingual) PLMs and Dynamic Sparsification (Li et al., ACL 2022), reconstructed.

    plmkit train --data rt-polarity --method structured_pruning --method.algorithm first_order --method.sparsity 0.5
    plmkit train --data rt-polarity --method dynamic_sparsification

The masks are the core's ``plmkit.core.sparsity.UnitGates`` (``model.unit_gates``).
"""

from plmkit.structured_pruning.config import DynamicSparsificationConfig, StructuredPruningConfig
from plmkit.structured_pruning.dynamic import sample_sparsities
from plmkit.structured_pruning.efficiency import flops_per_sequence, interleaved_latency, size_report
from plmkit.structured_pruning.method import DynamicSparsificationMethod, StructuredPruningMethod
from plmkit.structured_pruning.ranking import importance_batches, unit_importance
from plmkit.structured_pruning.runs import evaluate_at, export_at, load_at
from plmkit.structured_pruning.schedule import first_order_events
from plmkit.structured_pruning.toy import TOY_LANGUAGES, multilingual_toy_dataset

__all__ = [
    "TOY_LANGUAGES",
    "DynamicSparsificationConfig",
    "DynamicSparsificationMethod",
    "StructuredPruningConfig",
    "StructuredPruningMethod",
    "evaluate_at",
    "export_at",
    "first_order_events",
    "flops_per_sequence",
    "importance_batches",
    "interleaved_latency",
    "load_at",
    "multilingual_toy_dataset",
    "sample_sparsities",
    "size_report",
    "unit_importance",
]
