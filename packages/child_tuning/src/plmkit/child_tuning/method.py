"""`ChildTuningMethod`: Child-Tuning_F and Child-Tuning_D wired into the core Trainer's hooks.

- `before_optimizer_step` (after gradient clipping, before `optimizer.step()`): mask the gradients, F with a fresh
  random mask, D with the fixed Fisher mask. The optimizer is whatever the run uses (AdamW by default).
- `callbacks`: at `on_train_begin` (the pre-trained weights, the training dataloader) compute D's mask or seed F's
  sampler; at `on_save` store them in the checkpoint, and on resume read them back, so a resumed run keeps the mask
  computed at the pre-trained weights. The mask lives on the method, never in the model's state_dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from plmkit.child_tuning.config import ChildTuningConfig
from plmkit.child_tuning.fisher import fisher_mask
from plmkit.child_tuning.masks import FMaskSampler, apply_fixed_mask_, matching_parameters
from plmkit.core.training import Method, MethodError

__all__ = ["CHECKPOINT_FILE", "ChildTuningCallback", "ChildTuningMethod"]

CHECKPOINT_FILE = "child_tuning_state.safetensors"


class ChildTuningMethod(Method):
    """Child-Tuning (Xu, Luo et al., EMNLP 2021): update only a child network of the pre-trained model."""

    name = "child_tuning"
    config_class = ChildTuningConfig
    config: ChildTuningConfig

    def __init__(self, config: ChildTuningConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.gradient_mask: dict[str, torch.Tensor] | None = None
        self.sampler: FMaskSampler | None = None
        self._targets: list[tuple[nn.Parameter, torch.Tensor]] | None = None

    def callbacks(self) -> list[TrainerCallback]:
        return [ChildTuningCallback(self)]

    # ----- D: the fixed child network -------------------------------------------------------------------------
    def compute_mask(
        self, model: nn.Module, dataloader: Any, grad_clip: float, autocast_dtype: torch.dtype | None = None
    ) -> dict[str, torch.Tensor]:
        """Run the Fisher pass on the task's training data and fix the mask for the rest of the run."""
        c = self.config
        self.set_mask(fisher_mask(model, dataloader, c.reserve_p, c.pattern, grad_clip, c.per_example_fisher, autocast_dtype))
        return self.gradient_mask  # type: ignore[return-value]

    def set_mask(self, mask: dict[str, torch.Tensor]) -> None:
        self.gradient_mask = {name: m.bool() for name, m in mask.items()}
        self._targets = None

    def _mask_targets(self, model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
        if self._targets is None:
            if self.gradient_mask is None:
                raise MethodError(
                    "child_tuning mode D has no mask: train through plmkit's Trainer (its callback runs the Fisher "
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
        """Start F's mask stream (`config.seed` wins over `seed`)."""
        c = self.config
        self.sampler = FMaskSampler(c.reserve_p, c.seed if c.seed is not None else seed, c.rescales)
        return self.sampler

    # ----- the hook -------------------------------------------------------------------------------------------
    def before_optimizer_step(self, model: nn.Module) -> None:
        """g <- g * M (and / p where rescaling): called after gradient clipping, before `optimizer.step()`."""
        c = self.config
        if c.mode == "F":
            sampler = self.sampler or self.seed_sampler(torch.initial_seed())
            sampler(matching_parameters(model, c.pattern).values())
        else:
            apply_fixed_mask_(self._mask_targets(model), 1.0 / c.reserve_p if c.rescales else None)

    # ----- checkpoints ----------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must hold to resume exactly: D's mask, F's generator states."""
        if self.config.mode == "D":
            return {f"mask.{n}": m.to("cpu", torch.uint8).contiguous() for n, m in (self.gradient_mask or {}).items()}
        return {f"rng.{d}": s for d, s in (self.sampler.state_dict() if self.sampler else {}).items()}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        if self.config.mode == "D":
            self.set_mask({k.removeprefix("mask."): v.bool() for k, v in state.items() if k.startswith("mask.")})
        elif self.sampler is not None:
            self.sampler.load_state_dict({k.removeprefix("rng."): v for k, v in state.items() if k.startswith("rng.")})


class ChildTuningCallback(TrainerCallback):
    """Prepares the method when training starts (Fisher pass or mask seed) and carries its state in checkpoints."""

    def __init__(self, method: ChildTuningMethod) -> None:
        self.method = method

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):  # noqa: ANN001
        method, config = self.method, self.method.config
        resumed = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}" / CHECKPOINT_FILE
        if config.mode == "F":
            method.seed_sampler(args.seed)
        if state.global_step > 0:
            # Resuming: the mask was computed at the pre-trained weights; recomputing it now would use trained ones.
            if not resumed.exists():
                raise MethodError(f"child_tuning: resuming at step {state.global_step} but {resumed} is missing")
            method.load_state_tensors(load_file(str(resumed)))
        elif config.mode == "D":
            clip = config.fisher_grad_clip if config.fisher_grad_clip is not None else (args.max_grad_norm or 0.0)
            method.compute_mask(model, train_dataloader, clip, torch.bfloat16 if args.bf16 else None)

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            save_file(self.method.state_tensors(), str(folder / CHECKPOINT_FILE))
