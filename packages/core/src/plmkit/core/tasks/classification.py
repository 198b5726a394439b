"""`classification`: sentence and sentence-pair classification (or regression) on a builtin dataset or files, the
default task. Data loading, the LM-BFF few-shot sampler and tokenization are `plmkit.core.data`'s."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datasets import DatasetDict
from torch import nn
from transformers import DataCollatorWithPadding

from plmkit.core.data import TaskData, encode, few_shot_split, load_builtin, load_files
from plmkit.core.errors import DataError, TaskError
from plmkit.core.tasks import Task, TaskConfig
from plmkit.core.training import make_compute_metrics

__all__ = ["ClassificationConfig", "ClassificationTask"]


@dataclass
class ClassificationConfig(TaskConfig):
    """Classify one or two text columns into the training split's labels, or regress a float label.

    The data comes from the run's data flags: --data NAME, or --train_file/--validation_file/--test_file with
    --text_columns and --label_column."""


class ClassificationTask(Task):
    name = "classification"
    config_class = ClassificationConfig
    model_kind = "sequence-classification"
    main_metric = "accuracy"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data: TaskData | None = None

    def load(self) -> DatasetDict:
        s = self.source
        if s.data and (s.train_file or s.glue_dir):
            raise DataError("pass either --data (a builtin dataset) or files (--train_file / --glue_dir), not both")
        if s.data:
            data = load_builtin(s.data)
        elif s.train_file or s.glue_dir:
            data = load_files(s.train_file, s.validation_file, s.test_file, s.text_columns, s.label_column, s.glue_dir)
        else:
            raise DataError("no data: pass --data NAME (see `plmkit data list`) or --train_file FILE")
        if s.few_shot_k is not None:
            data = few_shot_split(data, s.few_shot_k, s.few_shot_seed)
        self.data = data.with_splits(s.limit(data.splits))
        return self.data.splits

    @property
    def task_data(self) -> TaskData:
        if self.data is None:
            self.load()
        assert self.data is not None
        return self.data

    @property
    def description(self) -> str:
        return self.task_data.name

    def model_options(self) -> dict[str, Any]:
        d = self.task_data
        return {
            "num_labels": d.num_labels,
            "id2label": dict(enumerate(d.label_names)) or None,
            "label2id": {n: i for i, n in enumerate(d.label_names)} or None,
            "problem_type": d.problem_type,
        }

    def check_model(self, model: nn.Module) -> None:
        if getattr(model.config, "is_encoder_decoder", False) and not hasattr(model, "classification_head"):
            raise TaskError(f"task classification needs a classifier; {type(model).__name__} has none")

    def encode(self, splits: DatasetDict, processor: Any, max_length: int,
               keep_columns: tuple[str, ...] = ()) -> DatasetDict:
        return encode(self.task_data.with_splits(splits), processor, max_length, keep_columns)

    def collator(self, processor: Any, model: nn.Module) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        return DataCollatorWithPadding(processor)

    def compute_metrics(self) -> Callable[..., dict[str, float]]:
        d = self.task_data
        return make_compute_metrics(d.metrics, d.problem_type == "regression")
