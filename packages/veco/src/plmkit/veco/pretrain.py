"""`veco_pretrain`: CA-MLM pre-training of a VECO encoder on pairs (x, y) -- translation pairs and adjacent
monolingual segments (Luo et al., ACL 2021, Sec. 3.2) -- trained by `plmkit train`.

    plmkit train --task veco_pretrain --train_file pairs/train.jsonl --validation_file pairs/validation.jsonl \\
        --model_name_or_path veco --model_config '{hidden_size: 256, num_hidden_layers: 4, ...}' \\
        --tokenizer_name_or_path TOKENIZER --method veco

Data: `.jsonl` (fields `x` and `y`, other fields ignored; `plmkit veco prepare-data` writes them), `.tsv` with a
header naming the two columns, or two plain-text files aligned by line (`--task.x_suffix .de --task.y_suffix .en`,
each data flag a prefix; files of unequal length are refused). Column names: `--task.x_column`, `--task.y_column`.

Each side is tokenized on its own (`<s> x </s>`, truncated to `--max_length`) and masked on its own with BERT's
80/10/10 rule (`plmkit.core.losses.mask_tokens`, `mlm_probability` of the non-special tokens); the same corrupted
x feeds both streams. Training masks change every step; validation masks are fixed per example (seeded by
`seed` and the example id), so evaluation losses compare across runs.

Loss (`objective`, see `plmkit.veco.modeling.OBJECTIVES`): `veco` is Eq. 3 of the paper -- the mean masked-token
cross-entropy of the H-stream and of the S-stream, for x and for y, four terms summed with equal weight; `mlm` keeps
the H-stream terms only (an MLM baseline on the same pairs); `ca_only` / `iclr` are the ICLR-2021 version's
CA+FFN pass (without, or besides, SA+CA+FFN). `detach_memory` stops the gradient through H_y^L where the S-stream
reads it (the paper does not say; default: not detached). With `--method veco` every term is logged
(`loss/mlm_x`, `loss/mlm_y`, `loss/ca_mlm_x`, `loss/ca_mlm_y`).

Evaluation: per term, the masked-token loss (`eval_<term>_loss`) and accuracy (`eval_<term>_accuracy`), and over all
terms `eval_masked_loss` / `eval_masked_accuracy`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import EvalPrediction

from plmkit.core.errors import DataError, TaskError
from plmkit.core.losses import mask_tokens
from plmkit.core.tasks import Task, TaskConfig
from plmkit.core.tasks.masked_lm import eval_generator
from plmkit.core.tasks.seq2seq import read_pairs, read_parallel
from plmkit.veco.configuration import VecoConfig
from plmkit.veco.modeling import OBJECTIVES, VecoForPreTraining, term_names

__all__ = ["PairCollator", "VecoPretrainConfig", "VecoPretrainTask"]

X, Y = "x", "y"
#: batch keys of each side: (ids, attention mask, masked-token targets). The paired side's targets are
#: `pair_targets`, not `pair_labels`: transformers' Trainer takes every forward argument whose name contains "label"
#: as a label and skips the loss of batches that lack one, which would silence evaluation on the core `masked_lm`
#: task (batches with `labels` only).
SIDES = (("input_ids", "attention_mask", "labels"), ("pair_input_ids", "pair_attention_mask", "pair_targets"))


@dataclass
class VecoPretrainConfig(TaskConfig):
    """VECO CA-MLM pre-training on pairs (x, y): .jsonl/.tsv pair files (--train_file, --validation_file) or
    plain-text pairs with --task.x_suffix/--task.y_suffix."""

    objective: str = field(default="veco", metadata={
        "help": "veco: MLM + CA-MLM on both streams (Eq. 3); mlm: H-stream only; ca_only/iclr: the ICLR-2021 "
                "version's CA+FFN pass", "choices": tuple(OBJECTIVES)})
    mlm_probability: float = field(default=0.15, metadata={"help": "share of each side's tokens chosen for masking"})
    detach_memory: bool = field(default=False, metadata={
        "help": "stop the gradient through the paired H-stream where the S-stream reads it"})
    x_column: str = field(default=X, metadata={"help": "the first side's field (.jsonl) or header column (.tsv)"})
    y_column: str = field(default=Y, metadata={"help": "the second side's field or column"})
    x_suffix: str = field(default="", metadata={"help": "plain-text pairs: PREFIX+x_suffix holds the first side"})
    y_suffix: str = field(default="", metadata={"help": "plain-text pairs: PREFIX+y_suffix holds the second side"})
    seed: int = field(default=0, metadata={"help": "seed of the fixed validation/test masks"})

    def validate(self) -> None:
        if not 0.0 < self.mlm_probability <= 1.0:
            raise TaskError(f"mlm_probability must be in (0, 1], got {self.mlm_probability}")
        if bool(self.x_suffix) != bool(self.y_suffix):
            raise TaskError("x_suffix and y_suffix go together (plain-text pairs need both)")
        if self.x_column == self.y_column:
            raise TaskError(f"x_column and y_column must differ, both are {self.x_column!r}")


class PairCollator:
    """Pads x (`input_ids`) and y (`pair_input_ids`) to one length and masks each side (see the module docstring);
    examples that carry labels already (validation/test) are only padded."""

    def __init__(self, tokenizer: Any, probability: float = 0.15, generator: torch.Generator | None = None) -> None:
        self.pad_id = tokenizer.pad_token_id
        self.mask_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.probability, self.generator = probability, generator

    def maskable(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask.bool() & ~torch.isin(ids, self.special)

    def _pad(self, rows: list[list[int]], length: int, value: int) -> torch.Tensor:
        return torch.tensor([r + [value] * (length - len(r)) for r in rows], dtype=torch.long)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(f[key]) for f in features for key in ("input_ids", "pair_input_ids"))
        batch: dict[str, torch.Tensor] = {}
        for ids_key, mask_key, labels_key in SIDES:
            ids = self._pad([f[ids_key] for f in features], length, self.pad_id)
            lengths = torch.tensor([len(f[ids_key]) for f in features])
            mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
            if labels_key in features[0]:
                labels = self._pad([f[labels_key] for f in features], length, -100)
            else:
                ids, labels = mask_tokens(ids, self.maskable(ids, mask), self.mask_id, self.vocab_size,
                                          self.probability, generator=self.generator)
            batch[ids_key], batch[mask_key], batch[labels_key] = ids, mask, labels
        if "example_id" in features[0]:
            batch["example_id"] = torch.tensor([int(f["example_id"]) for f in features], dtype=torch.long)
        return batch


class VecoPretrainTask(Task):
    name = "veco_pretrain"
    config_class = VecoPretrainConfig
    model_kind = "masked-lm"
    main_metric = "masked_accuracy"
    config: VecoPretrainConfig

    # -- data -------------------------------------------------------------------------------------------------------
    def load(self) -> DatasetDict:
        s, c = self.source, self.config
        if s.data or s.glue_dir:
            raise DataError("task veco_pretrain reads pair files (--train_file, --validation_file); write them with "
                            "`plmkit veco prepare-data`")
        files = {split: f for split, f in (("train", s.train_file), ("validation", s.validation_file),
                                           ("test", s.test_file)) if f}
        if "train" not in files:
            raise DataError("no data: pass --train_file (pairs as .jsonl with fields x and y, a .tsv with a header, or "
                            "a prefix with --task.x_suffix/--task.y_suffix)")
        splits = DatasetDict()
        for split, f in files.items():
            if c.x_suffix:
                ds = read_parallel(f + c.x_suffix, f + c.y_suffix)
            else:
                if not Path(f).exists():
                    raise DataError(f"{split} file {f} does not exist")
                ds = read_pairs(f, c.x_column, c.y_column)
            splits[split] = ds.rename_columns({"source": X, "target": Y})
        return s.limit(splits)

    @property
    def description(self) -> str:
        f, c = self.source.train_file, self.config
        return f"{f}{c.x_suffix} + {f}{c.y_suffix}" if f and c.x_suffix else (f or "files")

    # -- model ------------------------------------------------------------------------------------------------------
    def check_config(self, config: Any, name: str = "") -> None:
        name = name or getattr(config, "_name_or_path", "") or config.model_type
        if not isinstance(config, VecoConfig):
            raise TaskError(f"task veco_pretrain needs a VECO model (model type 'veco', e.g. --model_name_or_path veco "
                            f"--model_config '{{...}}' or tiny-veco); {name} is {config.model_type}")
        if config.is_encoder_decoder:
            raise TaskError(f"task veco_pretrain trains the VECO encoder; {name} is the encoder-decoder (NLG) model")
        if self.config.objective != "mlm" and not config.cross_attention:
            raise TaskError(f"objective {self.config.objective} needs the plug-in cross-attention, but {name} has "
                            "none (cross_attention=false); use --task.objective mlm")

    def check_model(self, model: nn.Module) -> None:
        core = getattr(model, "module", model)
        if not isinstance(core, VecoForPreTraining):
            raise TaskError(f"task veco_pretrain needs VecoForPreTraining, got {type(core).__name__}")
        self.check_config(core.config)

    # -- encoding ---------------------------------------------------------------------------------------------------
    def encode(self, splits: DatasetDict, processor: Any, max_length: int,
               keep_columns: tuple[str, ...] = ()) -> DatasetDict:
        if keep_columns:
            raise DataError(f"the veco_pretrain splits hold only pairs; they have no column(s) {list(keep_columns)}")
        collator = PairCollator(processor, self.config.mlm_probability)

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            x = processor(batch[X], truncation=True, max_length=max_length, return_attention_mask=False)
            y = processor(batch[Y], truncation=True, max_length=max_length, return_attention_mask=False)
            return {"input_ids": x["input_ids"], "pair_input_ids": y["input_ids"]}

        def fix_masks(batch: dict[str, list]) -> dict[str, list]:
            out: dict[str, list] = {k: [] for ids_key, _, labels_key in SIDES for k in (ids_key, labels_key)}
            for i, example in enumerate(batch["example_id"]):
                generator = eval_generator(self.config.seed, int(example), 7)
                for ids_key, _, labels_key in SIDES:
                    row = torch.tensor([batch[ids_key][i]])
                    ids, labels = mask_tokens(row, collator.maskable(row, torch.ones_like(row)), collator.mask_id,
                                              collator.vocab_size, collator.probability, generator=generator)
                    out[ids_key].append(ids[0].tolist())
                    out[labels_key].append(labels[0].tolist())
            return out

        encoded = DatasetDict()
        for split, ds in splits.items():
            out = ds.map(tokenize, batched=True, remove_columns=ds.column_names, desc=f"tokenize {split}")
            out = out.add_column("example_id", list(range(len(out))))
            if split != "train":
                out = out.map(fix_masks, batched=True, desc=f"mask {split}")
            encoded[split] = out
        return encoded

    def collator(self, processor: Any, model: nn.Module | None = None) -> PairCollator:
        return PairCollator(processor, self.config.mlm_probability)

    # -- training and evaluation --------------------------------------------------------------------------------------
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        out = model(**inputs, objective=self.config.objective, detach_memory=self.config.detach_memory)
        return out.loss, out

    def compute_metrics(self) -> Callable[[EvalPrediction], dict[str, float]]:
        names = term_names(self.config.objective)

        def metrics(pred: EvalPrediction) -> dict[str, float]:
            stats = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
            total = np.asarray(stats, dtype=np.float64).reshape(-1, 3 * len(names)).sum(0).reshape(len(names), 3)
            out: dict[str, float] = {}
            for name, (loss, count, correct) in zip(names, total, strict=True):
                out[f"{name}_loss"] = loss / count if count else float("nan")
                out[f"{name}_accuracy"] = correct / count if count else float("nan")
            loss, count, correct = total.sum(0)
            out["masked_loss"] = loss / count if count else float("nan")
            out["masked_accuracy"] = correct / count if count else float("nan")
            out["masked_tokens"] = int(count)
            return out

        return metrics


def pairs_dataset(x: list[str], y: list[str]) -> Dataset:
    """Pairs as the task's raw split (for code that builds pairs in memory)."""
    if len(x) != len(y):
        raise DataError(f"{len(x)} first sides for {len(y)} second sides")
    return Dataset.from_dict({X: x, Y: y})
