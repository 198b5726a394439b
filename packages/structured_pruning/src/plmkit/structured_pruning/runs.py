"""Working with a trained Dynamic Sparsification run at any sparsity: compact and save it (``export_at``, the
same as ``plmkit export RUN --output_dir DIR --method.sparsity S``), or load it gated at a sparsity (``load_at``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from plmkit.core.run import export_run, load_run
from plmkit.core.training import MethodError
from plmkit.structured_pruning.method import DynamicSparsificationMethod

__all__ = ["export_at", "load_at"]


def _overrides(sparsity: float) -> dict[str, str]:
    return {"sparsity": repr(float(sparsity))}


def load_at(run_dir: str | Path, sparsity: float) -> tuple[nn.Module, Any, DynamicSparsificationMethod]:
    """The run's model gated at ``sparsity`` (not compacted), its tokenizer, and its method."""
    model, tokenizer, method, _ = load_run(run_dir, _overrides(sparsity))
    if not isinstance(method, DynamicSparsificationMethod):
        raise MethodError(f"{run_dir} was trained with {method.name!r}, not dynamic_sparsification")
    method.set_sparsity(sparsity)
    return model, tokenizer, method


def export_at(run_dir: str | Path, sparsity: float, output_dir: str | Path) -> Path:
    """Compact a Dynamic Sparsification run at ``sparsity`` and save it (safetensors, config, tokenizer); load the
    result with ``plmkit.core.sparsity.load_compacted``."""
    return export_run(run_dir, output_dir, _overrides(sparsity))
