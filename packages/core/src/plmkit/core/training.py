"""Training: the `Method` interface, the method registry, and a `transformers.Trainer` that calls the hooks.

A method is a config dataclass plus an object with a few optional hooks (design doc, "The Method interface"):

| hook                          | when it runs                                                        |
|-------------------------------|---------------------------------------------------------------------|
| `prepare_model(model)`        | once, before the Trainer wraps the model (swap layers, add gates)   |
| `parameter_groups(model)`     | when the optimizer is built (which tensors train, with which lr)   |
| `callbacks()`                 | extra `TrainerCallback`s (schedules, snapshots, pruning steps)      |
| `train_sampler(dataset, args)`| the order of training examples (e.g. class-balanced batches)        |
| `extra_loss(model, inputs, outputs)` | added to the task loss at every forward                      |
| `before_optimizer_step(model)`| after gradient clipping, before `optimizer.step()` (edit gradients) |
| `export(model)`               | turn a trained model into one plain transformers can load           |

Everything else (devices, bf16, accumulation, checkpoints, DDP under torchrun, logging) is transformers.Trainer's.
Methods are found through the entry-point group `plmkit.methods`, so installing a package adds its methods.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

import numpy as np
import torch
import transformers
from torch import nn
from torch.utils.data import Sampler
from transformers import EvalPrediction, TrainerCallback

from plmkit.core import metrics as metrics_lib

__all__ = [
    "FinetuneConfig",
    "FinetuneMethod",
    "Method",
    "MethodConfig",
    "MethodError",
    "Trainer",
    "auto_num_threads",
    "available_methods",
    "build_method",
    "get_method",
    "make_compute_metrics",
]

ENTRY_POINT_GROUP = "plmkit.methods"


class MethodError(ValueError):
    """Unknown method, unknown option, or an option value outside its range."""


@dataclass
class MethodConfig:
    """Base class of every method's options. Subclasses validate their values in `validate`."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `MethodError` naming the option and its allowed range when a value is out of range."""


class Method:
    """Base class: every hook is optional and defaults to doing nothing."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, config: MethodConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise MethodError("pass either a config object or keyword options, not both")
        self.config = config if config is not None else self.config_class(**options)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        """Optimizer parameter groups (dicts with `params` and optionally `lr`, `weight_decay`, `lr_schedule`);
        None = default.

        A group without `weight_decay` gets `args.weight_decay`, except for biases and norm weights (as in HF).
        `lr_schedule="constant"` keeps that group at its `lr` while the others follow `--lr_scheduler_type`.
        """
        return None

    def callbacks(self) -> list[TrainerCallback]:
        return []

    def train_sampler(self, dataset: Any, args: transformers.TrainingArguments) -> Sampler | None:
        """The training sampler (per process); None = transformers' default (random, or as `args` says)."""
        return None

    def extra_loss(self, model: nn.Module, inputs: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        return None

    def before_optimizer_step(self, model: nn.Module) -> None:
        pass

    def export(self, model: nn.Module) -> nn.Module:
        return model

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


@dataclass
class FinetuneConfig(MethodConfig):
    """Plain full fine-tuning: every parameter is trained on the task loss. It has no options."""


class FinetuneMethod(Method):
    """The baseline every paper compares against."""

    name = "finetune"
    config_class = FinetuneConfig


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------
def available_methods() -> dict[str, Any]:
    """Installed methods by name (entry points, not yet imported)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_method(name: str) -> type[Method]:
    found = available_methods()
    if name not in found:
        raise MethodError(f"unknown method {name!r}; installed methods: {sorted(found)}")
    return found[name].load()


def build_method(name: str, options: dict[str, Any] | None = None) -> Method:
    """Instantiate method `name` with `options`, rejecting option names its config does not have."""
    cls = get_method(name)
    options = dict(options or {})
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise MethodError(f"method {name!r} has no option(s) {unknown}; its options are {sorted(known) or 'none'}")
    return cls(cls.config_class(**options))


# ---------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------
class _MethodHooks(TrainerCallback):
    def __init__(self, method: Method) -> None:
        self.method = method

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        # transformers calls this after gradient clipping and before optimizer.step().
        self.method.before_optimizer_step(model)


class Trainer(transformers.Trainer):
    """`transformers.Trainer` that applies a plmkit `Method` (default: plain fine-tuning)."""

    def __init__(self, model: nn.Module, args: transformers.TrainingArguments, method: Method | None = None, **kwargs: Any):
        self.method = method if method is not None else FinetuneMethod()
        model = self.method.prepare_model(model)
        callbacks = list(kwargs.pop("callbacks", None) or []) + self.method.callbacks() + [_MethodHooks(self.method)]
        super().__init__(model=model, args=args, callbacks=callbacks, **kwargs)
        if not hasattr(self.accelerator.unwrap_model(self.model), "accepts_loss_kwargs"):
            # transformers guesses that a model whose forward takes **kwargs normalises its loss by
            # `num_items_in_batch`, and then multiplies the loss by the number of processes. Most heads (BERT's
            # sequence classification among them) return a plain mean instead, so under DDP the gradients came out
            # world_size times too large. Use per-batch means, which DDP averages correctly.
            self.model_accepts_loss_kwargs = False

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        groups = self.method.parameter_groups(self.model)
        if groups is None or self.optimizer is not None:
            return super().create_optimizer(model)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
        # Groups that leave weight decay open get transformers' usual split: no decay for biases and norms.
        decay = {id(p) for n, p in self.model.named_parameters() if n in set(self.get_decay_parameter_names(self.model))}
        split: list[dict[str, Any]] = []
        for group in groups:
            if "weight_decay" in group:
                split.append(group)
                continue
            params = list(group["params"])
            split.append({**group, "params": [p for p in params if id(p) in decay], "weight_decay": self.args.weight_decay})
            split.append({**group, "params": [p for p in params if id(p) not in decay], "weight_decay": 0.0})
        self.optimizer = optimizer_cls([g for g in split if g["params"]], **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        groups = scheduler.optimizer.param_groups
        constant = [i for i, g in enumerate(groups) if g.get("lr_schedule", "shared") == "constant"]
        if constant:
            if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                raise MethodError(
                    f"a constant-lr parameter group needs a LambdaLR schedule; --lr_scheduler_type "
                    f"{self.args.lr_scheduler_type} gives {type(scheduler).__name__}"
                )
            for i in constant:
                scheduler.lr_lambdas[i] = _constant_factor
                groups[i]["lr"] = scheduler.base_lrs[i]
        return scheduler

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        sampler = self.method.train_sampler(dataset, self.args)
        return sampler if sampler is not None else super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        loss, outputs = super().compute_loss(
            model, dict(inputs), return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        extra = self.method.extra_loss(model, inputs, outputs)
        if extra is not None:
            loss = loss + extra
        return (loss, outputs) if return_outputs else loss


def _constant_factor(step: int) -> float:
    return 1.0


def make_compute_metrics(names: tuple[str, ...], regression: bool = False):  # noqa: ANN201
    """`compute_metrics` for transformers.Trainer from plmkit metric names."""

    def compute_metrics(pred: EvalPrediction) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        predictions = np.squeeze(logits, -1) if regression else np.argmax(logits, axis=-1)
        return metrics_lib.compute(names, predictions, pred.label_ids)

    return compute_metrics


def auto_num_threads() -> int:
    """Torch threads for this shared machine: one per core the load average leaves free (at least one).

    On 2 shared cores, two OpenMP threads competing with another busy process run many times slower than one.
    `PLMKIT_NUM_THREADS` overrides.
    """
    if os.environ.get("PLMKIT_NUM_THREADS"):
        return max(1, int(os.environ["PLMKIT_NUM_THREADS"]))
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(cores, math.floor(cores - load + 0.5)))
