"""Tasks: what a run learns and how it is scored, beside the `Method` that says how it trains.

A task loads its data (builtin or files), says which kind of model it needs (`model_kind`, a `load_model` kind),
encodes the splits for that model (always with an `example_id` column), collates batches, and evaluates. The core
ships `classification` (the default), `masked_lm` (pre-training on raw text) and `seq2seq` (translation and other
generation, scored with sacreBLEU); packages add their own through the entry-point group `plmkit.tasks`.

    plmkit train --task masked_lm --train_file corpus.txt --model_name_or_path minilm
    task: {name: seq2seq, num_beams: 4}            # in a YAML config
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from datasets import DatasetDict
from torch import nn

from plmkit.core.errors import TaskError
from plmkit.core.registry import Registry
from plmkit.core.training import MethodConfig

__all__ = ["TASKS", "DataSource", "Task", "TaskConfig", "build_task", "get_task"]

TASKS = Registry("plmkit.tasks", "task", TaskError)


@dataclass
class TaskConfig(MethodConfig):
    """Base class of every task's options (same conventions as method options)."""

    error: ClassVar[type[Exception]] = TaskError


@dataclass
class DataSource:
    """Where a task's examples come from: the run's data arguments (a builtin name or files, and limits)."""

    data: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    glue_dir: str | None = None
    text_columns: tuple[str, ...] = ("text",)
    label_column: str = "label"
    few_shot_k: int | None = None
    few_shot_seed: int = 13
    max_train_samples: int | None = None
    max_eval_samples: int | None = None

    @classmethod
    def from_args(cls, args: Any) -> DataSource:
        """From the run's `DataArguments` (or anything with the same attributes)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: getattr(args, k) for k in names if hasattr(args, k)}
        if "text_columns" in values:
            values["text_columns"] = tuple(values["text_columns"])
        return cls(**values)

    def limit(self, splits: DatasetDict) -> DatasetDict:
        """Apply `max_train_samples` / `max_eval_samples` (first N rows; builtin splits are in random order)."""
        for split, limit in (("train", self.max_train_samples), ("validation", self.max_eval_samples),
                             ("test", self.max_eval_samples)):
            if limit is not None and split in splits:
                splits[split] = splits[split].select(range(min(limit, len(splits[split]))))
        return splits


class Task:
    """Base class of tasks; see the module docstring. Subclasses set `name`, `config_class`, `model_kind`."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[TaskConfig]] = TaskConfig
    model_kind: ClassVar[str] = "sequence-classification"
    #: encoded columns the collator needs that are not model inputs (kept through the Trainer, e.g. word ids)
    batch_columns: ClassVar[tuple[str, ...]] = ()
    #: metric to report first in the run summary (e.g. accuracy, bleu, masked_accuracy)
    main_metric: ClassVar[str] = "loss"

    def __init__(self, config: TaskConfig | None = None, source: DataSource | None = None, **options: Any) -> None:
        if config is not None and options:
            raise TaskError("pass either a config object or keyword options, not both")
        self.config = config if config is not None else self.config_class(**options)
        self.source = source or DataSource()

    # -- data -------------------------------------------------------------------------------------------------------
    def load(self) -> DatasetDict:
        """The raw splits (train, and validation/test where they exist). A task without a train split only
        evaluates: `plmkit train` saves the model unchanged with the validation/test metrics (e.g. a probe)."""
        raise NotImplementedError

    @property
    def description(self) -> str:
        """A short name for logs (the builtin dataset or the files)."""
        return self.source.data or "files"

    def model_options(self) -> dict[str, Any]:
        """Config values `load_model` must set for this data (number of labels, label names, ...)."""
        return {}

    def check_config(self, config: Any, name: str) -> None:
        """Raise `TaskError` when a model of this config cannot serve the task (checked before it is built)."""

    def check_model(self, model: nn.Module) -> None:
        """Raise `TaskError` when `model` cannot serve this task (e.g. an encoder-only model for seq2seq)."""

    @classmethod
    def contract_kit(cls) -> Any:
        """How the contract kit (`plmkit.core.testing.contract`) exercises a method on this task: a `TaskKit`, or None
        where the kit has none. The core's tasks have theirs in `TASK_KITS`; a package's task returns its own."""
        return None

    def encode(self, splits: DatasetDict, processor: Any, max_length: int,
               keep_columns: tuple[str, ...] = ()) -> DatasetDict:
        """Model inputs for every split, with `example_id` (row index in its split) and `keep_columns`."""
        raise NotImplementedError

    def collator(self, processor: Any, model: nn.Module) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        raise NotImplementedError

    # -- training and evaluation --------------------------------------------------------------------------------------
    def compute_metrics(self) -> Callable[..., dict[str, float]] | None:
        """`compute_metrics` for transformers' evaluation loop (None: loss only)."""
        return None

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        """(loss, outputs) of one batch; the default is the model's own loss."""
        outputs = model(**inputs)
        return outputs.loss, outputs

    def evaluate(self, trainer: Any, dataset: Any, prefix: str) -> dict[str, float]:
        """Metrics of `dataset` under `prefix` (eval, test, ...); the default is transformers' evaluation loop."""
        return trainer.evaluate(dataset, metric_key_prefix=prefix)

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


def get_task(name: str) -> type[Task]:
    return TASKS.get(name)


def build_task(name: str, options: dict[str, Any] | None = None, source: DataSource | None = None) -> Task:
    """Instantiate task `name` with `options`, rejecting option names its config does not have."""
    cls = get_task(name)
    options = dict(options or {})
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TaskError(f"task {name!r} has no option(s) {unknown}; its options are {sorted(known) or 'none'}")
    return cls(cls.config_class(**options), source)
