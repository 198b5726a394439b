"""Sparsity primitives shared by PST, CAP and structured pruning.

- ``masks``: straight-through top-k / threshold binarizers and the global top-k threshold.
- ``layers``: ``MaskedLinear`` (magnitude or movement scores, nn.Linear or GPT-2 Conv1D), ``mask_linears``,
  ``set_sparsity`` (per-matrix or global ranking), ``set_threshold``.
- ``schedule``: the cubic sparsity schedule and `SparsitySchedule`, which methods apply after every optimizer step.
- ``gates`` / ``importance`` / ``compaction``: head and FFN-neuron gates, first-order importance, keep-masks,
  and physical removal of gated-off units.
- ``units``: ``UnitGates``, head/neuron keep-masks (with optional learned scores, L0 gates or a fixed ordering)
  held inside the model, synced into the gates before every forward, with first-order importance and compaction.
- ``slicing``: ``sliced_units``, forwards with only the kept units' rows and columns (the compacted model's cost,
  no copy).
- ``export``: fold masks into plain dense weights; ``report``: sparsity, parameter and FLOP counts.
"""

from plmkit.core.sparsity.compaction import compact_model, load_compacted, structural_keep
from plmkit.core.sparsity.export import export_dense
from plmkit.core.sparsity.gates import BlockParts, StructuralGates, add_structural_gates, transformer_blocks
from plmkit.core.sparsity.importance import first_order_importance, units_to_keep
from plmkit.core.sparsity.layers import (
    DEFAULT_TARGETS,
    MaskedLinear,
    effective_weight,
    frozen_masks,
    initial_scores,
    is_linear,
    mask_linears,
    masked_layers,
    set_sparsity,
    set_threshold,
)
from plmkit.core.sparsity.masks import (
    ThresholdBinarizer,
    TopKBinarizer,
    global_topk_counts,
    num_pruned,
    threshold_mask,
    topk_mask,
    validate_sparsity,
)
from plmkit.core.sparsity.report import format_report, sparsity_report
from plmkit.core.sparsity.schedule import (
    SparsitySchedule,
    cubic_sparsity,
    cubic_sparsity_steps,
    masked_sparsity,
)
from plmkit.core.sparsity.slicing import can_slice, sliced_units
from plmkit.core.sparsity.units import UnitGates, hard_concrete, keep_masks, l0_open_probability

__all__ = [
    "DEFAULT_TARGETS",
    "BlockParts",
    "MaskedLinear",
    "SparsitySchedule",
    "StructuralGates",
    "ThresholdBinarizer",
    "TopKBinarizer",
    "UnitGates",
    "add_structural_gates",
    "can_slice",
    "compact_model",
    "cubic_sparsity",
    "cubic_sparsity_steps",
    "effective_weight",
    "frozen_masks",
    "export_dense",
    "first_order_importance",
    "format_report",
    "global_topk_counts",
    "hard_concrete",
    "initial_scores",
    "is_linear",
    "keep_masks",
    "l0_open_probability",
    "load_compacted",
    "mask_linears",
    "masked_layers",
    "masked_sparsity",
    "num_pruned",
    "set_sparsity",
    "set_threshold",
    "sliced_units",
    "sparsity_report",
    "structural_keep",
    "threshold_mask",
    "topk_mask",
    "transformer_blocks",
    "units_to_keep",
    "validate_sparsity",
]
