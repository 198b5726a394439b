"""`ChildTuningMethod`: Child-Tuning_F and Child-Tuning_D on the core Trainer's method hooks.

- `on_train_begin` (the pre-trained weights, before the first step): D runs the Fisher pass over the training set
  (each process over its share of the batches, the scores summed over processes) and fixes the mask; F seeds its
  mask stream. A resumed run instead takes D's mask or F's generator state from the checkpoint (`load_state_dict`),
  so the mask computed at the pre-trained weights is kept.
- `before_optimizer_step` (after gradient clipping, before `optimizer.step()`): mask the gradients, F with a fresh
  random mask, D with the fixed Fisher mask. The optimizer is whatever the run uses (AdamW by default).
- `state_dict` / `load_state_dict`: D's mask or F's generator states, saved in every checkpoint by the core. The
  mask lives on the method, never in the model's state_dict.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from plmkit.child_tuning.config import ChildTuningConfig
from plmkit.child_tuning.fisher import fisher_mask
from plmkit.child_tuning.masks import FMaskSampler, apply_fixed_mask_, matching_parameters
from plmkit.core.testing.contract import ContractCase
from plmkit.core.training import EXAMPLE_ID, Method, MethodContext, MethodError

__all__ = ["ChildTuningMethod", "fisher_batches"]


def fisher_batches(ctx: MethodContext, seed: int) -> tuple[Iterator[dict[str, Any]], int]:
    """The Fisher pass's data: (this process's batches, the number of batches over all processes).

    As the reference, the pass runs over the whole training set in shuffled batches of the training batch size
    (a permutation seeded with `seed`, the same on every process, drawn from its own generator so training's random
    state is untouched), of the global training batch size. The batches are split between processes whole (batch j
    goes to process j mod world_size): the reference's Fisher estimate squares batch-mean gradients, so a batch
    must not be split to add up to the single-process result.
    """
    data = ctx.train_dataset
    if data is None or len(data) == 0:
        raise MethodError("child_tuning mode D needs training data for its Fisher pass")
    size = ctx.global_train_batch_size  # one process's batch = the single-process run's batch
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    return ctx.batches(Subset(data, order), batch_size=size, shard="batches"), math.ceil(len(data) / size)


class ChildTuningMethod(Method):
    """Child-Tuning (Xu, Luo et al., EMNLP 2021): update only a child network of the pre-trained model."""

    contract = [
        ContractCase("child_tuning", {"mode": "D"}, extra_passes=True), ContractCase("child_tuning", {"mode": "F"}),
    ]

    name = "child_tuning"
    config_class = ChildTuningConfig
    config: ChildTuningConfig

    def __init__(self, config: ChildTuningConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.gradient_mask: dict[str, torch.Tensor] | None = None
        self.sampler: FMaskSampler | None = None
        self._targets: list[tuple[nn.Parameter, torch.Tensor]] | None = None
        self._rng_state: dict[str, torch.Tensor] = {}  # F's generator states from a checkpoint, until seeded

    def prepare_model(self, model: nn.Module, ctx: MethodContext | None = None) -> nn.Module:
        """Nothing to change in the model; only check that the masked tensors exist."""
        if not matching_parameters(model, self.config.pattern):
            raise MethodError(f"child_tuning: no trainable parameter name matches the pattern {self.config.pattern!r}")
        return model

    # ----- D: the fixed child network -------------------------------------------------------------------------
    def compute_mask(
        self, model: nn.Module, dataloader: Any, grad_clip: float, autocast_dtype: torch.dtype | None = None,
        **fisher_options: Any,
    ) -> dict[str, torch.Tensor]:
        """Run the Fisher pass over `dataloader` and fix the mask for the rest of the run (`fisher_options`:
        `num_batches`, `all_reduce`, `loss_fn` of `fisher_scores`)."""
        c = self.config
        self.set_mask(fisher_mask(model, dataloader, c.reserve_p, c.pattern, grad_clip, c.per_example_fisher,
                                  autocast_dtype, **fisher_options))
        return self.gradient_mask  # type: ignore[return-value]

    def fisher_pass(self, ctx: MethodContext) -> dict[str, torch.Tensor]:
        """D's mask for a run: the Fisher pass over the training set at the current weights, every process over its
        share of the batches, the scores summed with `ctx.all_reduce` (see `fisher_batches`)."""
        c = self.config
        clip = c.fisher_grad_clip if c.fisher_grad_clip is not None else (ctx.args.max_grad_norm or 0.0)
        batches, num_batches = fisher_batches(ctx, ctx.args.seed)
        hook_columns = {EXAMPLE_ID, *self.batch_columns}
        task_loss = getattr(ctx.task, "compute_loss", None)

        def loss_fn(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
            inputs = {k: v for k, v in batch.items() if k not in hook_columns}
            with ctx.autocast():
                loss = task_loss(model, inputs)[0] if task_loss is not None else model(**inputs).loss
            if loss is None:
                raise MethodError("child_tuning mode D: the model returned no loss for the Fisher pass (no labels?)")
            return loss

        return self.compute_mask(ctx.model, batches, clip, num_batches=num_batches, all_reduce=ctx.all_reduce,
                                 loss_fn=loss_fn)

    def set_mask(self, mask: dict[str, torch.Tensor]) -> None:
        self.gradient_mask = {name: m.bool() for name, m in mask.items()}
        self._targets = None

    def _mask_targets(self, model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
        if self._targets is None:
            if self.gradient_mask is None:
                raise MethodError(
                    "child_tuning mode D has no mask: train through plmkit's Trainer (on_train_begin runs the Fisher "
                    "pass) or call compute_mask()/set_mask() first"
                )
            params = dict(model.named_parameters())
            missing = sorted(set(self.gradient_mask) - set(params))
            if missing:
                raise MethodError(f"child_tuning: the mask names parameters the model does not have: {missing[:5]}")
            self._targets = [(params[n], m.to(params[n].device)) for n, m in self.gradient_mask.items()]
        return self._targets

    # ----- F: the random child network ------------------------------------------------------------------------
    def seed_sampler(self, seed: int) -> FMaskSampler:
        """Start F's mask stream (`config.seed` wins over `seed`); a stream loaded from a checkpoint continues."""
        c = self.config
        self.sampler = FMaskSampler(c.reserve_p, c.seed if c.seed is not None else seed, c.rescales)
        if self._rng_state:
            self.sampler.load_state_dict(self._rng_state)
            self._rng_state = {}
        return self.sampler

    # ----- hooks ----------------------------------------------------------------------------------------------
    def on_train_begin(self, ctx: MethodContext) -> None:
        """F: seed the mask stream. D: the Fisher pass at the pre-trained weights, or, when resuming, the mask the
        checkpoint holds (recomputing it would score the fine-tuned weights)."""
        if self.config.mode == "F":
            if ctx.resumed_from is None:
                self._rng_state = {}
            self.seed_sampler(ctx.args.seed)
            return
        if ctx.resumed_from is not None:
            if self.gradient_mask is None:
                raise MethodError(
                    f"child_tuning: resuming from {ctx.resumed_from}, but its method state holds no Child-Tuning_D "
                    "mask (a checkpoint of another method or mode?)"
                )
        else:
            self.fisher_pass(ctx)
        self._targets = None
        self._mask_targets(ctx.model)

    def before_optimizer_step(self, model: nn.Module, ctx: MethodContext | None = None) -> None:
        """g <- g * M (and / p where rescaling): called after gradient clipping, before `optimizer.step()`."""
        c = self.config
        model = ctx.model if ctx is not None else model
        if c.mode == "F":
            sampler = self.sampler or self.seed_sampler(torch.initial_seed())
            sampler(matching_parameters(model, c.pattern).values())
        else:
            apply_fixed_mask_(self._mask_targets(model), 1.0 / c.reserve_p if c.rescales else None)

    # ----- checkpoints ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume exactly: D's mask (`mask.<parameter>`, uint8) or F's generator
        states (`rng.<device>`), and the mode."""
        state: dict[str, Any] = {"mode": self.config.mode}
        if self.config.mode == "D":
            for name, m in (self.gradient_mask or {}).items():
                state[f"mask.{name}"] = m.to("cpu", torch.uint8).contiguous()
        else:
            rng = self.sampler.state_dict() if self.sampler is not None else self._rng_state
            state.update({f"rng.{device}": s for device, s in rng.items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mode = state.get("mode", self.config.mode)
        if mode != self.config.mode:
            raise MethodError(f"child_tuning: the checkpoint holds mode {mode}'s state, this run is mode "
                              f"{self.config.mode}")
        if self.config.mode == "D":
            mask = {k.removeprefix("mask."): v for k, v in state.items() if k.startswith("mask.")}
            if mask:
                self.set_mask(mask)
            return
        # F: the stream continues from these states once on_train_begin has seeded the sampler.
        self._rng_state = {k.removeprefix("rng."): v for k, v in state.items() if k.startswith("rng.")}
