"""Head and FFN-neuron keep-masks that live inside the model, for every method that prunes whole units (structured
pruning of multilingual PLMs, CAP-f, Dynamic Sparsification).

``UnitGates.attach(model, ...)`` registers a ``UnitGates`` submodule as ``model.unit_gates`` holding

- buffers ``head_mask`` [G, L, H] and ``neuron_mask`` [G, L, F]: binary keep-masks, with G = 1 or one row per
  group of examples (one per language, say). They are in the model's state dict, so saving, loading and resuming
  a model restores them with no extra files;
- with ``scores="movement"``: parameters ``head_scores`` / ``neuron_scores`` [G, L, U], learned unit scores whose
  top-k mask at the scheduled sparsity gates the forward, with a straight-through gradient to the scores
  (movement pruning, Sanh et al. 2020, at unit level);
- with ``scores="l0"``: the same parameters as hard-concrete log-alphas (Louizos et al. 2018) and ``lagrange`` [2],
  the multipliers of Wang et al. (2020)'s Lagrangian that pulls the expected sparsity to a target;
- with ``ordering=True``: buffers ``head_importance`` / ``neuron_importance`` [L, U], one fixed ranking that nested
  masks at any sparsity are taken from (Dynamic Sparsification).

A forward pre-hook on the model computes the gate values before every forward (the masks; while ``learning``, the
scores' masks or hard-concrete samples) and hands them to the core's head/neuron hooks (``gates.StructuralGates``,
which scale each head's context and each FFN activation before the output projections). With G > 1 each example
uses the row that ``use_rows`` named for the next forward. ``importance`` measures first-order importance with
respect to the gate values (Michel et al. 2019), ``compact`` removes the gates and the gated-off units, and
``sliced`` runs forwards at the cost of the compacted model without changing it (``slicing.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from plmkit.core.errors import MethodError
from plmkit.core.sparsity.compaction import compact_model
from plmkit.core.sparsity.gates import BlockParts, StructuralGates, transformer_blocks
from plmkit.core.sparsity.importance import units_to_keep
from plmkit.core.sparsity.slicing import sliced_units

__all__ = ["UnitGates", "hard_concrete", "keep_masks", "l0_open_probability"]

Scores = Literal["movement", "l0"]
Scope = Literal["layer", "global"]

# Hard-concrete stretch interval and temperature (Louizos et al. 2018; Wang et al. 2020 use the same).
L0_BETA, L0_GAMMA, L0_ZETA = 2.0 / 3.0, -0.1, 1.1


def keep_masks(scores: torch.Tensor, sparsity: float, scope: str, min_per_layer: int = 0) -> torch.Tensor:
    """0/1 keep-masks [G, L, U] from scores [G, L, U]: ``units_to_keep`` for each of the G rows."""
    return torch.stack([units_to_keep(row, sparsity, scope, min_per_layer) for row in scores])  # type: ignore[arg-type]


def l0_open_probability(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(gate != 0) of a hard-concrete gate (Louizos et al. 2018, Eq. 12): the expected L0 norm per unit."""
    return torch.sigmoid(log_alpha - L0_BETA * math.log(-L0_GAMMA / L0_ZETA))


def hard_concrete(log_alpha: torch.Tensor) -> torch.Tensor:
    """A reparameterised hard-concrete sample in [0, 1] per entry of ``log_alpha`` (Louizos et al. 2018, Eq. 10)."""
    u = torch.rand_like(log_alpha).clamp(1e-6, 1.0 - 1e-6)
    s = torch.sigmoid((u.log() - (-u).log1p() + log_alpha) / L0_BETA)
    return (s * (L0_ZETA - L0_GAMMA) + L0_GAMMA).clamp(0.0, 1.0)


class _GateValues(StructuralGates):
    """The core's head/neuron hooks with gate values that are tensors set before each forward (not parameters):
    [L, H] / [L, F] for the whole batch, or [L, B, 1, H] / [L, B, 1, F] for one row per example (the hooks
    broadcast either layout over tokens). Non-persistent: they are not part of any state dict."""

    def __init__(self, blocks: list[BlockParts], device: torch.device) -> None:
        super().__init__(blocks, device=device)
        heads, neurons = self.head_gates.detach(), self.neuron_gates.detach()
        del self.head_gates, self.neuron_gates
        self.register_buffer("head_gates", heads, persistent=False)
        self.register_buffer("neuron_gates", neurons, persistent=False)


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    for value in (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), *args):
        if isinstance(value, torch.Tensor) and value.dim() >= 1:
            return int(value.shape[0])
    return None


class UnitGates(nn.Module):
    """Per-unit keep-masks (and optional scores or ordering) of one model, in its state dict; see the module
    docstring. Build it with ``UnitGates.attach(model, ...)``.

    Args:
        num_masks: G, the rows of masks (1: one mask for every example).
        scores: None (fixed masks), ``"movement"`` or ``"l0"`` (learned per-unit parameters).
        ordering: keep one fixed unit ranking (``set_ordering``) that ``masks(sparsity)`` nests masks by.
        scope: ``"layer"`` (the same fraction of every layer) or ``"global"`` (one ranking over layers).
        min_heads: the most important heads every layer keeps whatever the sparsity.
        score_init: the scores' initial value (L0: the initial log-alpha; 3.0 leaves nearly every gate open).
    """

    ATTRIBUTE = "unit_gates"

    def __init__(
        self,
        model: nn.Module,
        num_masks: int = 1,
        scores: Scores | None = None,
        ordering: bool = False,
        scope: Scope = "layer",
        min_heads: int = 1,
        score_init: float = 0.0,
    ) -> None:
        super().__init__()
        if scores not in (None, "movement", "l0"):
            raise ValueError(f"scores must be None, 'movement' or 'l0', got {scores!r}")
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
        if num_masks < 1:
            raise ValueError(f"num_masks must be >= 1, got {num_masks}")
        device = next(model.parameters()).device
        self.gates = _GateValues(transformer_blocks(model), device)
        layers, heads = self.gates.head_gates.shape
        neurons = self.gates.neuron_gates.shape[1]
        self.register_buffer("head_mask", torch.ones(num_masks, layers, heads, device=device))
        self.register_buffer("neuron_mask", torch.ones(num_masks, layers, neurons, device=device))
        self.scores_kind = scores
        if scores is not None:
            self.head_scores = nn.Parameter(torch.full((num_masks, layers, heads), float(score_init), device=device))
            self.neuron_scores = nn.Parameter(
                torch.full((num_masks, layers, neurons), float(score_init), device=device)
            )
        if scores == "l0":
            self.lagrange = nn.Parameter(torch.zeros(2, device=device))
        if ordering:
            self.register_buffer("head_importance", torch.zeros(layers, heads, device=device))
            self.register_buffer("neuron_importance", torch.zeros(layers, neurons, device=device))
        self.scope, self.min_heads = scope, min_heads
        self.learning = False  # True: the scores drive the gates; False: the binary mask buffers do
        self.sparsity = 0.0  # the scheduled sparsity while learning
        self.rows: torch.Tensor | None = None  # each example's mask row for the next forward (G > 1)
        self._probe: tuple[torch.Tensor, torch.Tensor] | None = None
        self._handle: RemovableHandle | None = None

    # -- attaching ------------------------------------------------------------------------------------------------
    @classmethod
    def attach(cls, model: nn.Module, **options: Any) -> UnitGates:
        """Create the gates, register them as ``model.unit_gates`` and install the per-forward pre-hook.
        Raises ValueError for a model without BERT/RoBERTa/XLM-R or GPT-2 blocks, or one that has gates already."""
        if hasattr(model, cls.ATTRIBUTE):
            raise ValueError(f"{type(model).__name__} already has unit gates")
        unit_gates = cls(model, **options)
        model.add_module(cls.ATTRIBUTE, unit_gates)
        unit_gates._handle = model.register_forward_pre_hook(unit_gates._before_forward, with_kwargs=True)
        return unit_gates

    def detach(self, model: nn.Module) -> None:
        """Remove every hook and the ``unit_gates`` submodule: the model is a plain transformers model again."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.gates.remove()
        if getattr(model, self.ATTRIBUTE, None) is self:
            delattr(model, self.ATTRIBUTE)

    def compact(self, model: nn.Module, heads: torch.Tensor | None = None, neurons: torch.Tensor | None = None,
                row: int = 0) -> nn.Module:
        """Detach the gates and physically remove the units the masks [L, H] / [L, F] zero (default: mask row
        ``row``); load the result with ``load_compacted``."""
        heads = self.head_mask[row] if heads is None else heads
        neurons = self.neuron_mask[row] if neurons is None else neurons
        heads, neurons = heads.detach().cpu(), neurons.detach().cpu()
        self.detach(model)
        return compact_model(model, heads, neurons)  # type: ignore[arg-type]

    @contextmanager
    def sliced(self, model: nn.Module) -> Iterator[None]:
        """Forwards within the context compute with only the units the (fixed, single-row) masks keep, gathered from
        the full weights: what the gated forward computes, at the compacted model's cost (see ``slicing.py``)."""
        if self.num_masks != 1 or self.learning:
            raise MethodError("sliced forwards need one fixed mask row (no per-group masks, no learned scores)")
        self.gates.active = False
        try:
            with sliced_units(model, self.head_mask[0], self.neuron_mask[0]):
                yield
        finally:
            self.gates.active = True

    @property
    def num_masks(self) -> int:
        return self.head_mask.shape[0]

    # -- masks ------------------------------------------------------------------------------------------------------
    def keep(self, heads: torch.Tensor, neurons: torch.Tensor, sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep-masks from unit scores [G, L, U] with this model's ranking scope and head minimum (units scored
        -inf rank first, so a cumulative sparsity prunes them again)."""
        return (keep_masks(heads, sparsity, self.scope, self.min_heads), keep_masks(neurons, sparsity, self.scope, 0))

    def masks(self, sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary keep-masks [G, L, H], [G, L, F] at ``sparsity`` from the scores (or the ordering)."""
        if self.scores_kind is not None:
            heads, neurons = self.head_scores.detach(), self.neuron_scores.detach()
        elif hasattr(self, "head_importance"):
            heads, neurons = self.head_importance[None], self.neuron_importance[None]
        else:
            raise ValueError("these gates have neither scores nor an ordering to derive masks from")
        return self.keep(heads, neurons, sparsity)

    @torch.no_grad()
    def set_masks(self, heads: torch.Tensor, neurons: torch.Tensor) -> None:
        """Fix the binary masks: [G, L, H] and [G, L, F], or [L, H] / [L, F] (or anything that broadcasts) for
        every row."""
        self.head_mask.copy_(heads.to(self.head_mask).expand_as(self.head_mask))
        self.neuron_mask.copy_(neurons.to(self.neuron_mask).expand_as(self.neuron_mask))

    @torch.no_grad()
    def set_ordering(self, heads: torch.Tensor, neurons: torch.Tensor) -> None:
        """Fix the unit ranking ([L, H], [L, F]) that ``masks(sparsity)`` takes nested masks from."""
        self.head_importance.copy_(heads)
        self.neuron_importance.copy_(neurons)

    def freeze(self, sparsity: float) -> None:
        """Stop learning: the masks become the scores' top-k at ``sparsity`` and stay fixed."""
        self.set_masks(*self.masks(sparsity))
        self.learning = False
        for p in (self.head_scores, self.neuron_scores):
            p.requires_grad_(False)

    def sparsity_reached(self) -> dict[str, float]:
        """Fraction of heads and of FFN neurons the masks remove (over every row)."""
        return {"head_sparsity": 1.0 - float(self.head_mask.mean()), "neuron_sparsity": 1.0 - float(self.neuron_mask.mean())}

    # -- L0 ----------------------------------------------------------------------------------------------------------
    def expected_sparsity(self) -> tuple[torch.Tensor, torch.Tensor]:
        """L0 gates: the expected fraction of closed heads and of closed neurons (differentiable)."""
        return tuple(1.0 - l0_open_probability(s).mean() for s in (self.head_scores, self.neuron_scores))  # type: ignore[return-value]

    def lagrangian(self, target: float) -> torch.Tensor:
        """lambda1 (E - t) + lambda2 (E - t)^2 for the expected head and neuron sparsity E and the target t
        (Wang et al. 2020); the multipliers ``lagrange`` are meant to be maximised (flip their gradients)."""
        loss = self.lagrange.new_zeros(())
        for expected in self.expected_sparsity():
            gap = expected - target
            loss = loss + self.lagrange[0] * gap + self.lagrange[1] * gap * gap
        return loss

    # -- gate values --------------------------------------------------------------------------------------------------
    def use_rows(self, rows: Any) -> None:
        """The mask row of each example of the next forward ([B] ints in [0, G)); consumed by that forward."""
        rows = torch.as_tensor(rows, device=self.head_mask.device).long().flatten()
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.num_masks):
            raise MethodError(f"mask rows must be in [0, {self.num_masks}), got {sorted(set(rows.tolist()))}")
        self.rows = rows

    def values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate values [G, L, H], [G, L, F] for this forward."""
        if self._probe is not None:
            return self._probe
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

    def _before_forward(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        heads, neurons = self.values()
        rows, self.rows = self.rows, None
        if self.num_masks == 1:
            self.gates.head_gates, self.gates.neuron_gates = heads[0], neurons[0]
            return
        if rows is None:
            raise MethodError(
                f"unit gates with {self.num_masks} mask rows need each example's row before every forward "
                "(use_rows); the method takes it from a batch column"
            )
        batch = _batch_size(args, kwargs)
        if batch is not None and batch != rows.numel():
            raise MethodError(f"{rows.numel()} mask rows given for a batch of {batch} examples")
        # [G, L, U] -> per example [B, L, U] -> [L, B, 1, U], the layout the hooks broadcast over tokens.
        self.gates.head_gates = heads[rows].transpose(0, 1).unsqueeze(2)
        self.gates.neuron_gates = neurons[rows].transpose(0, 1).unsqueeze(2)

    # -- first-order importance -----------------------------------------------------------------------------------
    def importance(
        self,
        model: nn.Module,
        batches: Iterable[Mapping[str, Any]],
        loss_fn: Callable[[nn.Module, dict[str, Any]], torch.Tensor] | None = None,
        normalize: Literal["layer"] | None = "layer",
        live_only: bool = False,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """First-order importance (Michel et al. 2019) of every unit under the current masks: heads [G, L, H],
        neurons [G, L, F], I = sum over batches of |dL/dgate|.

        The gate values are the masks, made leaves that require grad; the model runs in eval mode (dropout off)
        and its parameters receive no ``.grad``. The loss is ``model(**batch).loss`` unless ``loss_fn(model,
        batch)`` is given (with G > 1 it must call ``use_rows`` and should sum one loss per row over that row's
        examples: row g's importance is then the gradient of its own examples' loss). ``live_only`` counts only
        units the mask keeps (the gradient times the mask), so pruned units weigh nothing in the normalisation;
        otherwise a pruned unit's gate still gets its gradient at 0, as the reference code of Michel et al. and
        CAP measures it. ``all_reduce`` (e.g. a method context's) sums the totals over processes before
        ``normalize="layer"`` divides each layer's vector by its L2 norm.
        """
        if normalize not in ("layer", None):
            raise ValueError(f"normalize must be 'layer' or None, got {normalize!r}")
        device = self.head_mask.device
        totals = [torch.zeros_like(self.head_mask, dtype=torch.float32),
                  torch.zeros_like(self.neuron_mask, dtype=torch.float32)]
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                for raw in batches:
                    batch = _to_device(raw, device)
                    probe = (self.head_mask.detach().clone().requires_grad_(True),
                             self.neuron_mask.detach().clone().requires_grad_(True))
                    self._probe = probe
                    loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
                    grads = torch.autograd.grad(loss, probe, allow_unused=True)
                    for total, grad in zip(totals, grads, strict=True):
                        if grad is not None:
                            total.add_(grad.abs().float())
        finally:
            self._probe = None
            model.train(was_training)
        if all_reduce is not None:
            totals = [all_reduce(t) for t in totals]
        if live_only:
            totals = [totals[0] * self.head_mask.float(), totals[1] * self.neuron_mask.float()]
        if normalize == "layer":
            totals = [t / (t.norm(dim=-1, keepdim=True) + 1e-20) for t in totals]
        return totals[0], totals[1]
