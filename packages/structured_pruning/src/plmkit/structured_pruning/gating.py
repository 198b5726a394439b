"""Unit gates that live inside the model: the masks (and learned unit scores) are buffers and parameters of a
``UnitGates`` module attached as ``model.unit_gates``, so a run's state dict carries them and ``load_run``
restores them; the gate values reach the network through the core's head/neuron hooks (``StructuralGates``).

Before every forward, a pre-hook on the model computes the gate values from the current state:
- fixed binary masks (first-order pruning, Dynamic Sparsification, any model after training),
- movement scores: the top-k mask at the scheduled sparsity with a straight-through gradient to the scores,
- L0: a hard-concrete sample of each gate (training) or the top-k of log-alpha (evaluation),
and, in the per-language setting, picks each example's row by the ``language`` id the batch carries (the
pre-hook removes that key, so the transformers model never sees it).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from plmkit.core.sparsity import StructuralGates, transformer_blocks, units_to_keep
from plmkit.core.training import MethodError

__all__ = ["ExampleGates", "UnitGates", "hard_concrete", "keep_masks", "l0_open_probability"]

ATTRIBUTE = "unit_gates"
Scores = Literal["movement", "l0"]

# Hard-concrete stretch interval and temperature (Louizos et al. 2018; Wang et al. 2020 use the same).
L0_BETA, L0_GAMMA, L0_ZETA = 2.0 / 3.0, -0.1, 1.1


class ExampleGates(StructuralGates):
    """The core's gates and hooks, with gate values that are tensors set before each forward (not parameters).

    Head gates are [L, H] for the whole batch or [L, B, 1, H] for one row per example (neurons: [L, F] or
    [L, B, 1, F]); the core's hooks broadcast either layout over tokens.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(transformer_blocks(model), device=next(model.parameters()).device)
        heads, neurons = self.head_gates.detach(), self.neuron_gates.detach()
        del self.head_gates, self.neuron_gates
        self.register_buffer("head_gates", heads, persistent=False)
        self.register_buffer("neuron_gates", neurons, persistent=False)


def keep_masks(scores: torch.Tensor, sparsity: float, scope: str, min_heads: int = 0) -> torch.Tensor:
    """0/1 keep-masks [G, L, U] from scores [G, L, U]: the core's ``units_to_keep`` for each of the G rows."""
    return torch.stack([units_to_keep(row, sparsity, scope, min_heads) for row in scores])  # type: ignore[arg-type]


def l0_open_probability(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(gate != 0) of a hard-concrete gate (Louizos et al. 2018, Eq. 12): the expected L0 norm per unit."""
    return torch.sigmoid(log_alpha - L0_BETA * math.log(-L0_GAMMA / L0_ZETA))


def hard_concrete(log_alpha: torch.Tensor) -> torch.Tensor:
    """A reparameterised hard-concrete sample in [0, 1] per entry of ``log_alpha`` (Louizos et al. 2018, Eq. 10)."""
    u = torch.rand_like(log_alpha).clamp(1e-6, 1.0 - 1e-6)
    s = torch.sigmoid((u.log() - (-u).log1p() + log_alpha) / L0_BETA)
    return (s * (L0_ZETA - L0_GAMMA) + L0_GAMMA).clamp(0.0, 1.0)


class UnitGates(nn.Module):
    """Per-unit masks and scores of one model, in its state dict; see the module docstring.

    Buffers ``head_mask`` [G, L, H] and ``neuron_mask`` [G, L, F] (G = 1, or one row per language); with
    ``scores`` also parameters ``head_scores`` / ``neuron_scores`` of the same shapes (movement scores or L0
    log-alphas); with ``ordering`` also buffers ``head_importance`` [L, H] / ``neuron_importance`` [L, F], the
    fixed ranking Dynamic Sparsification nests its masks by.
    """

    def __init__(
        self,
        model: nn.Module,
        num_masks: int = 1,
        scores: Scores | None = None,
        ordering: bool = False,
        scope: str = "layer",
        min_heads: int = 1,
        score_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.gates = ExampleGates(model)
        layers, heads = self.gates.head_gates.shape
        neurons = self.gates.neuron_gates.shape[1]
        device = self.gates.head_gates.device
        self.register_buffer("head_mask", torch.ones(num_masks, layers, heads, device=device))
        self.register_buffer("neuron_mask", torch.ones(num_masks, layers, neurons, device=device))
        self.scores_kind = scores
        if scores is not None:
            self.head_scores = nn.Parameter(torch.full((num_masks, layers, heads), score_init, device=device))
            self.neuron_scores = nn.Parameter(torch.full((num_masks, layers, neurons), score_init, device=device))
        if ordering:
            self.register_buffer("head_importance", torch.zeros(layers, heads, device=device))
            self.register_buffer("neuron_importance", torch.zeros(layers, neurons, device=device))
        self.scope, self.min_heads = scope, min_heads
        self.learning = False  # True while scores drive the gates; False: the binary mask buffers do
        self.sparsity = 0.0  # the scheduled sparsity while learning
        self._handle: RemovableHandle | None = None

    @property
    def num_masks(self) -> int:
        return self.head_mask.shape[0]

    # -- attaching --------------------------------------------------------------------------------------------
    @classmethod
    def attach(cls, model: nn.Module, **kwargs: Any) -> UnitGates:
        """Create the gates, register them as ``model.unit_gates`` and install the per-forward pre-hook."""
        if hasattr(model, ATTRIBUTE):
            raise MethodError(f"{type(model).__name__} already has unit gates")
        unit_gates = cls(model, **kwargs)
        model.add_module(ATTRIBUTE, unit_gates)
        unit_gates._handle = model.register_forward_pre_hook(unit_gates._before_forward, with_kwargs=True)
        return unit_gates

    def detach_from(self, model: nn.Module) -> None:
        """Remove every hook and the ``unit_gates`` submodule: the model is a plain transformers model again."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.gates.remove()
        delattr(model, ATTRIBUTE)

    # -- gate values ------------------------------------------------------------------------------------------
    def masks(self, sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary keep-masks [G, L, H], [G, L, F] at ``sparsity`` from the scores (or the ordering)."""
        if self.scores_kind is not None:
            heads, neurons = self.head_scores.detach(), self.neuron_scores.detach()
        elif hasattr(self, "head_importance"):
            heads, neurons = self.head_importance[None], self.neuron_importance[None]
        else:
            raise MethodError("these gates have neither scores nor an ordering to derive masks from")
        return self.keep(heads, neurons, sparsity)

    def keep(self, heads: torch.Tensor, neurons: torch.Tensor, sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep-masks from unit scores [G, L, U] with this model's ranking scope and head minimum."""
        return (
            keep_masks(heads, sparsity, self.scope, self.min_heads),
            keep_masks(neurons, sparsity, self.scope, 0),
        )

    def scores_to_masks(self, heads: torch.Tensor, neurons: torch.Tensor, sparsity: float) -> None:
        """Fix the masks to the top (1 - sparsity) of the given unit scores [G, L, U]."""
        self.set_masks(*self.keep(heads, neurons, sparsity))

    @torch.no_grad()
    def set_masks(self, heads: torch.Tensor, neurons: torch.Tensor) -> None:
        """Fix the binary masks (shapes [G, L, H] and [G, L, F], or [L, H] / [L, F] for every row)."""
        self.head_mask.copy_(heads.expand_as(self.head_mask))
        self.neuron_mask.copy_(neurons.expand_as(self.neuron_mask))

    def freeze(self, sparsity: float) -> None:
        """Stop learning: the masks become the top-k of the scores at ``sparsity`` and stay fixed."""
        self.set_masks(*self.masks(sparsity))
        self.learning = False
        for p in self.parameters():
            p.requires_grad_(False)

    def _current(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate values [G, L, H], [G, L, F] for this forward."""
        if not self.learning:
            # Copies: autograd keeps the gate values for backward, and the buffers may change before it
            # (Dynamic Sparsification runs several sparsities per step).
            return self.head_mask.clone(), self.neuron_mask.clone()
        if self.scores_kind == "l0" and self.training:
            return hard_concrete(self.head_scores), hard_concrete(self.neuron_scores)
        heads, neurons = self.masks(self.sparsity)
        if self.scores_kind == "movement":
            # Straight-through: the forward uses the binary mask, the scores get dL/dgate (movement at unit level).
            heads = heads + self.head_scores - self.head_scores.detach()
            neurons = neurons + self.neuron_scores - self.neuron_scores.detach()
        return heads, neurons

    def _before_forward(self, model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        language = kwargs.pop("language", None)
        heads, neurons = self._current()
        if self.num_masks == 1:
            self.gates.head_gates, self.gates.neuron_gates = heads[0], neurons[0]
            return args, kwargs
        if language is None:
            raise MethodError(
                "per_language masks need a `language` id per example in every batch (a `language` column of "
                "ids; with transformers.Trainer also pass remove_unused_columns=False)"
            )
        rows = torch.as_tensor(language, device=heads.device).long().flatten()
        # [G, L, U] -> per example [B, L, U] -> [L, B, 1, U], the layout ExampleGates broadcasts over tokens.
        self.gates.head_gates = heads[rows].transpose(0, 1).unsqueeze(2)
        self.gates.neuron_gates = neurons[rows].transpose(0, 1).unsqueeze(2)
        return args, kwargs
