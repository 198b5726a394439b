"""Working with a trained Dynamic Sparsification run at any sparsity: compact and save it (``export_at``, the
same as ``plmkit export RUN --output_dir DIR --method.sparsity S``), load it gated at a sparsity (``load_at``), or
evaluate it there (``evaluate_at``, on its own data or on other files given as flags, as ``plmkit eval`` takes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from plmkit.core.run import evaluate_run, export_run, load_run
from plmkit.core.training import MethodError
from plmkit.structured_pruning.method import DynamicSparsificationMethod

__all__ = ["evaluate_at", "export_at", "load_at"]


def _overrides(sparsity: float) -> dict[str, str]:
    return {"sparsity": repr(float(sparsity))}


def _load_gated(run_dir: str | Path, sparsity: float) -> tuple[nn.Module, Any, DynamicSparsificationMethod, Any]:
    """``load_run``'s four pieces, the model gated at ``sparsity``."""
    model, tokenizer, method, cfg = load_run(run_dir, _overrides(sparsity))
    if not isinstance(method, DynamicSparsificationMethod):
        raise MethodError(f"{run_dir} was trained with {method.name!r}, not dynamic_sparsification")
    method.set_sparsity(sparsity)
    return model, tokenizer, method, cfg


def load_at(run_dir: str | Path, sparsity: float) -> tuple[nn.Module, Any, DynamicSparsificationMethod]:
    """The run's model gated at ``sparsity`` (not compacted), its tokenizer, and its method."""
    return _load_gated(run_dir, sparsity)[:3]


def evaluate_at(run_dir: str | Path, sparsity: float, split: str = "test",
                data_overrides: list[str] | None = None) -> dict[str, float]:
    """The run's metrics gated at ``sparsity`` on one split of its data, or of other data given as flags
    (``["--test_file", "test.de.jsonl"]``)."""
    return evaluate_run(run_dir, split, data_overrides, loaded=_load_gated(run_dir, sparsity))


def export_at(run_dir: str | Path, sparsity: float, output_dir: str | Path) -> Path:
    """Compact a Dynamic Sparsification run at ``sparsity`` and save it (safetensors, config, tokenizer); load the
    result with ``plmkit.core.sparsity.load_compacted``."""
    return export_run(run_dir, output_dir, _overrides(sparsity))
