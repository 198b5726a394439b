"""`veco_classification`: sentence classification with a VECO encoder, plug-out or plug-in (Sec. 3.3).

Without `--task.pair_column` it is the core's `classification` task (the plug-out H-stream). With it, each example
has a paired text (e.g. its translation, or the other sentence of an NLI pair): the first text column is the input
x, the pair column y feeds the plug-in cross-attention, and the classifier reads [H_x^L; S_x^L] (the model is built
with `plug_in=true`). A VECO without cross-attention weights cannot be used plug-in, and says so.

    plmkit train --task veco_classification --task.pair_column translation --train_file train.jsonl ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import DatasetDict
from torch import nn

from plmkit.core.errors import DataError, TaskError
from plmkit.core.models import fresh_parameters
from plmkit.core.tasks.classification import ClassificationConfig, ClassificationTask
from plmkit.veco.configuration import VecoConfig

__all__ = ["PluginCollator", "VecoClassificationConfig", "VecoClassificationTask"]


@dataclass
class VecoClassificationConfig(ClassificationConfig):
    """Classification with a VECO encoder: plug-out (default) or plug-in with --task.pair_column (the paired text
    that the cross-attention reads)."""

    pair_column: str = field(default="", metadata={
        "help": "column of the paired text (plug-in: the classifier reads [H_x; S_x]); empty: plug-out"})


class PluginCollator:
    """Pads `input_ids` and `pair_input_ids` (each to its own longest row) with their attention masks."""

    def __init__(self, tokenizer: Any) -> None:
        self.pad_id = tokenizer.pad_token_id

    def _pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(len(r) for r in rows)
        ids = torch.tensor([r + [self.pad_id] * (length - len(r)) for r in rows], dtype=torch.long)
        mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows], dtype=torch.long)
        return ids, mask

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        batch["input_ids"], batch["attention_mask"] = self._pad([f["input_ids"] for f in features])
        batch["pair_input_ids"], batch["pair_attention_mask"] = self._pad([f["pair_input_ids"] for f in features])
        labels = [f["labels"] for f in features]
        batch["labels"] = torch.tensor(labels, dtype=torch.float if isinstance(labels[0], float) else torch.long)
        if "example_id" in features[0]:
            batch["example_id"] = torch.tensor([int(f["example_id"]) for f in features], dtype=torch.long)
        for key in features[0]:
            if key not in batch and not isinstance(features[0][key], (str, list)):
                batch[key] = torch.tensor([f[key] for f in features])
        return batch


class VecoClassificationTask(ClassificationTask):
    name = "veco_classification"
    config_class = VecoClassificationConfig
    config: VecoClassificationConfig

    @property
    def plug_in(self) -> bool:
        return bool(self.config.pair_column)

    def load(self) -> DatasetDict:
        splits = super().load()
        if self.plug_in:
            for split, ds in splits.items():
                if self.config.pair_column not in ds.column_names:
                    raise DataError(f"the {split} split has no pair column {self.config.pair_column!r}; its columns "
                                    f"are {ds.column_names}")
        return splits

    def model_options(self) -> dict[str, Any]:
        return {**super().model_options(), **({"plug_in": True} if self.plug_in else {})}

    def check_config(self, config: Any, name: str = "") -> None:
        if not self.plug_in:
            return
        name = name or getattr(config, "_name_or_path", "") or config.model_type
        if not isinstance(config, VecoConfig):
            raise TaskError(f"--task.pair_column (plug-in) needs a VECO model; {name} is {config.model_type}")
        if not config.cross_attention:
            raise TaskError(f"plug-in classification reads the cross-attention, but {name} has no cross-attention "
                            "weights (cross_attention=false): drop --task.pair_column for the plug-out model")

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        if not self.plug_in:
            return
        fresh = fresh_parameters(model)
        names = [n for n, _ in model.named_parameters()]
        ca = [n for n in names if ".encoder_attn" in n]
        if ca and set(ca) <= fresh and not set(names) <= fresh:
            raise TaskError("plug-in classification reads the pre-trained cross-attention, but the checkpoint has no "
                            "cross-attention weights (they would start random): pre-train with CA-MLM, or drop "
                            "--task.pair_column for the plug-out model")

    def encode(self, splits: DatasetDict, processor: Any, max_length: int,
               keep_columns: tuple[str, ...] = ()) -> DatasetDict:
        if not self.plug_in:
            return super().encode(splits, processor, max_length, keep_columns)
        pair = self.config.pair_column
        text = self.task_data.text_columns[0]

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            x = processor(batch[text], truncation=True, max_length=max_length)
            y = processor(batch[pair], truncation=True, max_length=max_length, return_attention_mask=False)
            return {"input_ids": x["input_ids"], "pair_input_ids": y["input_ids"]}

        keep = {"label", *keep_columns}
        encoded = DatasetDict()
        for split, ds in self.task_data.with_splits(splits).splits.items():
            drop = [c for c in ds.column_names if c not in keep]
            out = ds.map(tokenize, batched=True, remove_columns=drop, desc=f"tokenize {split}")
            out = out.add_column("example_id", list(range(len(out))))
            encoded[split] = out.rename_column("label", "labels")
        return encoded

    def collator(self, processor: Any, model: nn.Module) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        return PluginCollator(processor) if self.plug_in else super().collator(processor, model)
