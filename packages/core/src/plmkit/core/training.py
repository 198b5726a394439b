"""Training: the `Method` contract, the method registry, and a `transformers.Trainer` that applies a method to a
task.

A method is a config dataclass plus an object with optional hooks. Every hook gets what it needs as arguments
(the model, the batch, a `MethodContext` with the run's pieces); no hook holds a reference to the Trainer.

| hook                                   | when it runs                                                          |
|----------------------------------------|-----------------------------------------------------------------------|
| `batch_columns`                        | dataset columns kept for the hooks (never given to `model(**inputs)`)|
| `prepare_data(data, ctx)`              | once, on the encoded splits (add columns, filter, reorder)           |
| `prepare_model(model, ctx)`            | once, before the Trainer wraps the model (swap layers, add gates)    |
| `parameter_groups(model)`              | when the optimizer is built (which tensors train, with which lr)     |
| `train_sampler(dataset, args)`         | the order of training examples (e.g. class-balanced batches)         |
| `prepare_batch(batch, ctx)`            | every batch (training and evaluation: check `model.training`), on the |
|                                        | device, before the forward (views, masking, per-example mask rows)   |
| `loss_terms(model, batch, outputs, ctx)` | every training forward: named terms added to the task loss, each   |
|                                        | logged as `loss/<name>`; the task loss is weighted by `task_loss_weight` |
| `before_optimizer_step(model, ctx)`    | after gradient clipping, before `optimizer.step()` (edit gradients)  |
| `on_train_begin/on_epoch_begin/on_step_begin/on_step_end/on_epoch_end/on_train_end(ctx)` | lifecycle  |
| `before_evaluate(ctx)`                 | before every evaluation (e.g. refresh anchors from the training data) |
| `state_dict()` / `load_state_dict(s)`  | saved in every checkpoint and restored on resume                      |
| `report()`                             | extra numbers merged into the run's metrics.json                      |
| `export(model)`                        | a model plain transformers can load                                   |

`MethodContext` gives hooks the run's arguments, task, processor, model, optimizer, scheduler and state, plus
`batches()` (the training data in order, each process its own shard, for extra data passes), `all_reduce`/
`all_gather`, and `restart_optimizer()`.

Everything else (devices, bf16, accumulation, checkpoints, DDP under torchrun, logging) is transformers.Trainer's.
Methods are found through the entry-point group `plmkit.methods`, so installing a package adds its methods.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
import transformers
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Sampler
from transformers import EvalPrediction, TrainerCallback, get_scheduler

from plmkit.core import metrics as metrics_lib
from plmkit.core.errors import MethodError, NonFiniteError
from plmkit.core.registry import Registry
from plmkit.core.sparsity.layers import frozen_masks
from plmkit.core.testing.contract import ContractCase

__all__ = [
    "FinetuneConfig",
    "FinetuneMethod",
    "HeadOnlyConfig",
    "HeadOnlyMethod",
    "METHODS",
    "Method",
    "MethodConfig",
    "MethodContext",
    "MethodError",
    "Trainer",
    "auto_num_threads",
    "available_methods",
    "build_method",
    "get_method",
    "make_compute_metrics",
    "option_choices",
    "prepare_model",
]

METHODS = Registry("plmkit.methods", "method", MethodError)
STATE_TENSORS, STATE_JSON = "method_state.safetensors", "method_state.json"
EXAMPLE_ID = "example_id"


def option_choices(config_class: type, name: str) -> tuple[Any, ...] | None:
    """The allowed values of option `name` (from `field(metadata={"choices": ...})`), or None."""
    for f in dataclasses.fields(config_class):
        if f.name == name:
            return tuple(f.metadata["choices"]) if "choices" in f.metadata else None
    return None


@dataclass
class MethodConfig:
    """Base class of every method's (and task's) options. Options with `metadata={"choices": (...)}` are checked
    against them; subclasses check the rest in `validate`."""

    error: ClassVar[type[Exception]] = MethodError

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                raise self.error(f"{f.name} must be one of {list(choices)}, got {getattr(self, f.name)!r}")
        self.validate()

    def validate(self) -> None:
        """Raise `MethodError` naming the option and its allowed range when a value is out of range."""


class MethodContext:
    """What a hook may use besides its arguments: the run's pieces, as far as they exist when it runs.

    Attributes: `args` (TrainingArguments), `task`, `processor`, and while training `model`, `optimizer`,
    `lr_scheduler`, `state` (TrainerState), `train_dataset`, `train_dataloader`.
    """

    def __init__(self, args: transformers.TrainingArguments, task: Any = None, processor: Any = None) -> None:
        self.args, self.task, self.processor = args, task, processor
        self.trainer: Trainer | None = None
        self.state: transformers.TrainerState | None = None
        self.train_dataloader: Any = None
        self.resumed_from: str | None = None

    # -- the run's objects ------------------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        assert self.trainer is not None, "no model before the Trainer exists"
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        opt = self.trainer.optimizer if self.trainer is not None else None
        return getattr(opt, "optimizer", opt)

    @property
    def lr_scheduler(self) -> Any:
        return self.trainer.lr_scheduler if self.trainer is not None else None

    @property
    def train_dataset(self) -> Any:
        return self.trainer.train_dataset if self.trainer is not None else None

    @property
    def device(self) -> torch.device:
        return self.args.device

    @property
    def world_size(self) -> int:
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def rank(self) -> int:
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    @property
    def global_step(self) -> int:
        return self.state.global_step if self.state is not None else 0

    def autocast(self) -> Any:
        """The Trainer's mixed-precision context (bf16/fp16 autocast as TrainingArguments ask)."""
        if self.trainer is not None:
            return self.trainer.autocast_smart_context_manager()
        return torch.autocast(self.device.type, enabled=False)

    # -- extra data passes --------------------------------------------------------------------------------------
    def batches(self, dataset: Any = None, batch_size: int | None = None, shard: bool | str = True,
                limit: int | None = None) -> Iterator[dict[str, Any]]:
        """The training set (or `dataset`) in order, collated as for training and moved to the device, with its
        `example_id` column, in batches of `batch_size` (default: the evaluation batch size). `limit` stops after
        that many batches (over all processes).

        `shard` says how processes share the pass (combine their results with `all_reduce` / `all_gather`):
        True or "examples": each process takes every world_size-th example (for per-example results);
        "batches": the data is cut into batches of `batch_size` and process r takes batches r, r + world_size, ...,
        whole, so batch-level quantities (the gradient of a batch-mean loss, squared or made absolute) add up to
        the single-process pass; give `batch_size` as the global batch (`global_train_batch_size`).
        False: every process reads everything.
        """
        assert self.trainer is not None, "batches() needs the Trainer"
        data = self.train_dataset if dataset is None else dataset
        size = batch_size or self.args.per_device_eval_batch_size
        indices = list(range(len(data)))
        if limit is not None:
            indices = indices[: limit * size]
        if shard == "batches":
            indices = [i for start in range(self.rank * size, len(indices), self.world_size * size)
                       for i in indices[start : start + size]]
        elif shard and self.world_size > 1:
            indices = indices[self.rank :: self.world_size]
        loader = DataLoader(torch.utils.data.Subset(data, indices), batch_size=size, shuffle=False,
                            collate_fn=self.trainer.data_collator)
        for batch in loader:
            yield self.trainer._prepare_inputs(batch)

    @property
    def global_train_batch_size(self) -> int:
        """The examples per optimizer step over all processes (before gradient accumulation)."""
        return self.args.per_device_train_batch_size * self.world_size

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Sum (or max, min) `tensor` over processes, in place; a no-op in a single process."""
        if self.world_size > 1:
            ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
            dist.all_reduce(tensor, op=ops[op])
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate `tensor` [n_i, ...] of every process along dim 0 (sizes may differ)."""
        if self.world_size == 1:
            return tensor
        sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])

    def restart_optimizer(self, steps: int | None = None) -> None:
        """Forget the optimizer's state and restart the learning-rate schedule (warm-up included) from the
        current step, as a fresh `trainer.train()` of `steps` steps would (default: the steps that remain)."""
        optimizer, scheduler = self.optimizer, self.lr_scheduler
        if optimizer is None:
            return
        optimizer.state.clear()
        if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            return
        start = scheduler.last_epoch
        steps = steps or max(1, (self.state.max_steps if self.state else start + 1) - start)
        kind = str(getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type))
        for i, group in enumerate(optimizer.param_groups):
            if group.get("lr_schedule", "shared") == "constant":
                continue
            scheduler.lr_lambdas[i] = _Shifted(kind, self.args.get_warmup_steps(steps), steps, start)
            group["lr"] = scheduler.base_lrs[i] * scheduler.lr_lambdas[i](start)


_FACTORS: dict[tuple[str, int, int], Any] = {}


class _Shifted:
    """lr factor of a schedule of `steps` steps (`kind`, `warmup` steps) that (re)started at step `start`. Holds only
    numbers, so it saves in the scheduler's state and `Trainer` rebuilds it when a run resumes."""

    def __init__(self, kind: str, warmup: int, steps: int, start: int) -> None:
        self.kind, self.warmup, self.steps, self.start = kind, warmup, steps, start

    def __call__(self, step: int) -> float:
        key = (self.kind, self.warmup, self.steps)
        if key not in _FACTORS:
            fresh = get_scheduler(self.kind, optimizer=torch.optim.SGD([torch.zeros(1)], lr=1.0),
                                  num_warmup_steps=self.warmup, num_training_steps=self.steps)
            _FACTORS[key] = fresh.lr_lambdas[0]
        return _FACTORS[key](step - self.start)


class Method:
    """Base class: every hook is optional and defaults to doing nothing (see the module docstring)."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    batch_columns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: MethodConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise MethodError("pass either a config object or keyword options, not both")
        self.config = config if config is not None else self.config_class(**options)

    # -- set-up --------------------------------------------------------------------------------------------------
    def prepare_data(self, data: Any, ctx: MethodContext) -> Any:
        return data

    def prepare_model(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        return model

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        """Optimizer parameter groups (dicts with `params` and optionally `lr`, `weight_decay`, `lr_schedule`);
        None = default.

        A group without `weight_decay` gets `args.weight_decay`, except for biases and norm weights (as in HF).
        `lr_schedule="constant"` keeps that group at its `lr` while the others follow `--lr_scheduler_type`.
        """
        return None

    def train_sampler(self, dataset: Any, args: transformers.TrainingArguments) -> Sampler | None:
        """The training sampler (per process); None = transformers' default (random, or as `args` says)."""
        return None

    # -- every step ---------------------------------------------------------------------------------------------
    def prepare_batch(self, batch: dict[str, Any], ctx: MethodContext) -> dict[str, Any]:
        return batch

    @property
    def task_loss_weight(self) -> float:
        return 1.0

    def loss_terms(self, model: nn.Module, batch: dict[str, Any], outputs: Any,
                   ctx: MethodContext) -> dict[str, torch.Tensor]:
        return {}

    def before_optimizer_step(self, model: nn.Module, ctx: MethodContext) -> None:
        pass

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def on_train_begin(self, ctx: MethodContext) -> None:
        pass

    def on_epoch_begin(self, ctx: MethodContext) -> None:
        pass

    def on_step_begin(self, ctx: MethodContext) -> None:
        pass

    def on_step_end(self, ctx: MethodContext) -> None:
        pass

    def on_epoch_end(self, ctx: MethodContext) -> None:
        pass

    def on_train_end(self, ctx: MethodContext) -> None:
        pass

    def before_evaluate(self, ctx: MethodContext) -> None:
        pass

    # -- state, report, export ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume this method exactly: tensors and JSON-able values."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def report(self) -> dict[str, Any]:
        """Numbers to add to the run's metrics.json (parameter counts, sparsity reached, bank sizes, ...)."""
        return {}

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


@dataclass
class HeadOnlyConfig(MethodConfig):
    """Train only the task head (every parameter outside the model's base encoder, `model.base_model`); the encoder
    is frozen. It has no options."""


class HeadOnlyMethod(Method):
    """Linear probing for classification, masked-LM head adaptation for `masked_lm` (e.g. a checkpoint shipped without
    its MLM head, such as all-MiniLM-L6-v2, before continued pre-training). Parameters the head shares with the
    encoder (BERT's decoder tied to the word embeddings) stay frozen with the encoder."""

    name = "head_only"
    config_class = HeadOnlyConfig
    # A probe, not a fine-tuning method: a fresh head on a frozen encoder at the kit's fine-tuning budget (lr 1e-4,
    # 128 steps) is not expected to reach fine-tuning's accuracy on TREC, so the kit's TREC check is off.
    contract = [ContractCase("head_only", trec_defaults=False)]

    def prepare_model(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        base = getattr(model, "base_model", None)
        if not isinstance(base, nn.Module) or base is model:
            raise MethodError(f"head_only needs a model with a head on a base encoder (model.base_model); "
                              f"{type(model).__name__} has none")
        frozen = {id(p) for p in base.parameters()}
        head = [p for p in model.parameters() if id(p) not in frozen]
        if not head:
            raise MethodError(f"{type(model).__name__} has no parameter outside its base encoder: nothing to train")
        for p in model.parameters():
            p.requires_grad_(id(p) not in frozen)
        return model


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------
def available_methods() -> dict[str, Any]:
    """Installed methods by name (entry points, not yet imported)."""
    return METHODS.entries()


def get_method(name: str) -> type[Method]:
    found = available_methods()
    if name not in found:
        raise MethodError(f"unknown method {name!r}; installed methods: {sorted(found)}")
    obj = found[name]
    return obj.load() if hasattr(obj, "load") else obj


def build_method(name: str, options: dict[str, Any] | None = None) -> Method:
    """Instantiate method `name` with `options`, rejecting option names its config does not have."""
    cls = get_method(name)
    options = dict(options or {})
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise MethodError(f"method {name!r} has no option(s) {unknown}; its options are {sorted(known) or 'none'}")
    return cls(cls.config_class(**options))


def prepare_model(method: Method, model: nn.Module, ctx: MethodContext) -> nn.Module:
    """`method.prepare_model(model, ctx)`, the one entry point the core uses."""
    return method.prepare_model(model, ctx)


# ---------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------
class _MethodHooks(TrainerCallback):
    """Calls the method's lifecycle hooks with the context, checks gradients, and carries the method's state in
    every checkpoint."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def _ctx(self, state: Any, kwargs: dict[str, Any]) -> MethodContext:
        ctx = self.trainer.method_context
        ctx.state = state
        if kwargs.get("train_dataloader") is not None:
            ctx.train_dataloader = kwargs["train_dataloader"]
        return ctx

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        ctx = self._ctx(state, kwargs)
        resumed = self.trainer.resumed_from
        if resumed is not None and state.global_step > 0:
            ctx.resumed_from = resumed
            self.trainer.method.load_state_dict(load_method_state(resumed))
        self.trainer.method.on_train_begin(ctx)

    def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self.trainer.method.on_epoch_begin(self._ctx(state, kwargs))

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self.trainer.method.on_step_begin(self._ctx(state, kwargs))

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # noqa: ANN001, ANN201
        # transformers calls this after gradient clipping and before optimizer.step().
        ctx = self._ctx(state, kwargs)
        if not args.fp16:  # fp16's loss scaler skips steps with inf gradients by design
            _check_finite_gradients(self.trainer.model, state.global_step + 1)
        self.trainer.method.before_optimizer_step(model, ctx)

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self.trainer.method.on_step_end(self._ctx(state, kwargs))

    def on_epoch_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self.trainer.method.on_epoch_end(self._ctx(state, kwargs))

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self.trainer.method.on_train_end(self._ctx(state, kwargs))

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{transformers.trainer_utils.PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            save_method_state(folder, self.trainer.method.state_dict())


def _check_finite_gradients(model: nn.Module, step: int) -> None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    if not torch.isfinite(torch.stack(norms)).all():
        names = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        raise NonFiniteError(f"step {step}: non-finite gradient in {names[:3]}{' ...' if len(names) > 3 else ''}")


def save_method_state(folder: str | Path, state: dict[str, Any]) -> None:
    """Write a method's `state_dict()`: tensors as safetensors, everything else as JSON."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    rest = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    if tensors:
        save_file(tensors, str(folder / STATE_TENSORS))
    (folder / STATE_JSON).write_text(json.dumps(rest))


def load_method_state(folder: str | Path) -> dict[str, Any]:
    """Read what `save_method_state` wrote (empty when the checkpoint has no method state)."""
    folder = Path(folder)
    state: dict[str, Any] = {}
    if (folder / STATE_JSON).exists():
        state.update(json.loads((folder / STATE_JSON).read_text()))
    if (folder / STATE_TENSORS).exists():
        state.update(load_file(str(folder / STATE_TENSORS)))
    return state


class Trainer(transformers.Trainer):
    """`transformers.Trainer` that applies a plmkit `Method` (default: plain fine-tuning) to a task.

    `task` (optional) supplies the forward (e.g. masked-LM loss on masked positions only); the method's
    `batch_columns` and `example_id` are kept in every batch for the hooks and removed before the model's forward.
    `model_prepared=True` skips the method's `prepare_model` (a reloaded run's model already has its layers).
    """

    def __init__(self, model: nn.Module, args: transformers.TrainingArguments, method: Method | None = None,
                 task: Any = None, model_prepared: bool = False, **kwargs: Any):
        self.method = method if method is not None else FinetuneMethod()
        self.task = task
        self.method_context = MethodContext(args, task, kwargs.get("processing_class"))
        self.resumed_from: str | None = None
        self._in_task_evaluate = False
        self._term_sums: dict[str, float] = defaultdict(float)
        self._term_count = 0
        if not model_prepared:  # a reloaded run's model has the method's layers already
            model = prepare_model(self.method, model, self.method_context)
        super().__init__(model=model, args=args, **kwargs)
        self.method_context.trainer = self
        self.add_callback(_MethodHooks(self))
        if not hasattr(self.accelerator.unwrap_model(self.model), "accepts_loss_kwargs"):
            # transformers guesses that a model whose forward takes **kwargs normalises its loss by
            # `num_items_in_batch`, and then multiplies the loss by the number of processes. Most heads (BERT's
            # sequence classification among them) return a plain mean instead, so under DDP the gradients came out
            # world_size times too large. Use per-batch means, which DDP averages correctly.
            self.model_accepts_loss_kwargs = False

    @property
    def hook_columns(self) -> tuple[str, ...]:
        """Batch entries that never reach the model: `example_id`, the method's and the task's `batch_columns`."""
        return (EXAMPLE_ID, *self.method.batch_columns, *getattr(self.task, "batch_columns", ()))

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
        if isinstance(resume_from_checkpoint, str):
            self.resumed_from = resume_from_checkpoint
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        path = Path(checkpoint or "") / "scheduler.pt"
        if checkpoint is None or not path.is_file() or not isinstance(self.lr_scheduler, torch.optim.lr_scheduler.LambdaLR):
            return
        saved = torch.load(path, weights_only=True).get("lr_lambdas", [])
        for i, state in enumerate(saved):  # schedules restarted by `ctx.restart_optimizer` before the checkpoint
            if isinstance(state, dict) and {"kind", "warmup", "steps", "start"} <= set(state):
                self.lr_scheduler.lr_lambdas[i] = _Shifted(**{k: state[k] for k in ("kind", "warmup", "steps", "start")})

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

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval",
                 **kwargs: Any) -> dict[str, float]:
        """transformers' evaluation loop, after the method's `before_evaluate`; a task with its own `evaluate`
        (generation and BLEU, say) runs it instead, so evaluations during training report its metrics too."""
        if self.task is not None and _overrides(self.task, "evaluate") and not self._in_task_evaluate:
            self._in_task_evaluate = True
            try:
                dataset = self.eval_dataset if eval_dataset is None else eval_dataset
                return self.task.evaluate(self, dataset, metric_key_prefix)
            finally:
                self._in_task_evaluate = False
        self.method.before_evaluate(self.method_context)
        with frozen_masks(self.model):  # the weights do not change while evaluating: one top-k per masked layer
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix,
                                    **kwargs)

    def predict(self, test_dataset: Any, ignore_keys: Any = None, metric_key_prefix: str = "test",
                **kwargs: Any) -> Any:
        with frozen_masks(self.model):
            return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix,
                                   **kwargs)

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        sampler = self.method.train_sampler(dataset, self.args)
        return sampler if sampler is not None else super()._get_train_sampler(train_dataset)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        # Keep the hooks' columns through `remove_unused_columns`; compute_loss takes them out again.
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *self.hook_columns]))

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):  # noqa: ANN001, ANN201
        has_labels = bool(self.label_names) and all(inputs.get(k) is not None for k in self.label_names)
        if not has_labels:  # transformers calls model(**inputs) directly here: hook columns must not reach it
            batch = self.method.prepare_batch(dict(self._prepare_inputs(inputs)), self.method_context)
            inputs = {k: v for k, v in batch.items() if k not in self.hook_columns}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        ctx = self.method_context
        batch = self.method.prepare_batch(dict(inputs), ctx)
        model_inputs = {k: v for k, v in batch.items() if k not in self.hook_columns}
        if self.task is not None and _overrides(self.task, "compute_loss"):
            loss, outputs = self.task.compute_loss(model, model_inputs)
        else:
            loss, outputs = super().compute_loss(
                model, model_inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
        if not model.training:
            return (loss, outputs) if return_outputs else loss
        terms = dict(self.method.loss_terms(model, batch, outputs, ctx))
        total = self.method.task_loss_weight * loss
        for term in terms.values():
            total = total + term
        self._record_terms(loss, terms, total)
        return (total, outputs) if return_outputs else total

    def _record_terms(self, task_loss: torch.Tensor, terms: dict[str, torch.Tensor], total: torch.Tensor) -> None:
        step = (self.state.global_step if self.state is not None else 0) + 1
        values = {"task": task_loss.detach(), **{k: v.detach() for k, v in terms.items()}}
        for name, value in values.items():
            if not torch.isfinite(value).all():
                raise NonFiniteError(f"step {step}: the {name} loss is {value.float().mean().item()}")
        if not torch.isfinite(total.detach()):
            raise NonFiniteError(f"step {step}: the total loss is {total.item()}")
        if terms:
            for name, value in values.items():
                self._term_sums[name] += float(value.float().mean())
            self._term_count += 1

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._term_count and "loss" in logs:
            logs.update({f"loss/{k}": v / self._term_count for k, v in self._term_sums.items()})
            self._term_sums.clear()
            self._term_count = 0
        super().log(logs, *args, **kwargs)


def _overrides(task: Any, name: str) -> bool:
    """Whether `task`'s class replaces the base `Task` hook `name`."""
    from plmkit.core.tasks import Task

    return getattr(type(task), name, None) is not getattr(Task, name)


def _constant_factor(step: int) -> float:
    return 1.0


def make_compute_metrics(names: tuple[str, ...], regression: bool = False):  # noqa: ANN201
    """`compute_metrics` for transformers.Trainer from plmkit metric names."""

    def compute_metrics(pred: EvalPrediction) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        predictions = np.squeeze(logits, -1) if regression else np.argmax(logits, axis=-1)
        return metrics_lib.compute(names, predictions, pred.label_ids)

    return compute_metrics


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check: AVX-512 BF16 or AMX). On other CPUs (AVX2 only) bf16
    autocast is emulated and several times slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fast_bf16() -> bool:
    """Whether bf16 autocast is fast here: a GPU, or a CPU with native bf16."""
    return torch.cuda.is_available() or native_bf16()


def slow_bf16_warning(bf16: bool) -> str | None:
    """The warning a run with `--bf16 true` gets where bf16 autocast is emulated (not `fast_bf16`), else None."""
    if not bf16 or fast_bf16():
        return None
    return ("bf16 autocast on this CPU is emulated (no AVX-512 BF16 or AMX): it runs several times slower than fp32 "
            "(measured: a MiniLM step about 10x); drop --bf16 (or `bf16: true` from the config) unless bf16 numerics "
            "are the point")


def auto_num_threads() -> int:
    """Torch CPU threads: one per core the load average leaves free (at least one); on a machine with a GPU, 4.

    On 2 shared cores, two OpenMP threads competing with another busy process run many times slower than one; on a
    GPU machine the CPU only feeds the device, and several runs side by side must not each take every core.
    `PLMKIT_NUM_THREADS` overrides.
    """
    if os.environ.get("PLMKIT_NUM_THREADS"):
        return max(1, int(os.environ["PLMKIT_NUM_THREADS"]))
    cores = os.cpu_count() or 1
    if torch.cuda.is_available():
        return min(4, cores)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(cores, math.floor(cores - load + 0.5)))

