"""Tasks on image-text pairs: `image_text` (matching and retrieval; SemVLP's pre-training task) and
`image_text_classification` (a label per image-text pair, fine-tuning in either mode).

Data (both): `--data emoji` (the builtin, `plmkit.vlp.data`) or `--train_file` / `--validation_file` / `--test_file`
(.csv, .tsv, .jsonl or .json) with an image path column (`--task.image_column`, default `image`; relative paths are
relative to the file) and a caption column (the first of `--text_columns`, default `text`). Captions longer than
`--max_length` tokens are truncated, with a warning that counts them per split. Every image is opened when the splits
are encoded (`check_images`): a missing or unreadable file is a `DataError` naming it; images of any mode are
converted to RGB (transparency composited onto white, `plmkit.vlp.images.load_rgb`). Pixels come from timm's
evaluation transform of the model's image encoder (`plmkit.core.processors.image_transform`, resize to
`config.image_size`, no crop); `--task.augment true` uses timm's training transform (random resized crop, flip,
colour jitter) for training batches instead, off by default because a flip or a crop contradicts captions that name a
direction or a part of the picture.

`image_text`:
- loss: image-text matching on the pooled [CLS] (the model's `itm_loss`). The collator swaps each caption, with
  probability `itm_negative_probability` (0.5, as LXMERT), for the caption of another example in the batch that is not
  a caption of this image anywhere in the split (captions compared after whitespace normalisation; images by path),
  so a negative is never a true caption (a row with no such partner in its batch keeps its caption, labelled
  matched). Draws come from a generator seeded with (`negative_seed`, the batch's example ids): fixed for a given
  batch (evaluation losses repeat; a resumed run redraws the same negatives), new batches every
  epoch. The `semvlp` method adds its terms (MLM, masked visual modelling, QA) on top.
- evaluation: `loss` and `accuracy` (matching accuracy on those pairs), then retrieval over the whole split
  (`plmkit.vlp.retrieval`): `itm_{mode}_{t2i,i2t}_r{1,5,10}` with the matching head for each of `eval_modes`, and
  `emb_...` with embeddings.
- QA: when the training split has an `answer_column` (default `answer`), its non-empty values form the answer set and
  rows with an answer get `answer_targets` (the semvlp method's `qa` term, on matched pairs only).

`image_text_classification`: `--label_column` (default `label`; the builtin's are the 10 Unicode categories) predicted
from the pair by `SemVLPForSequenceClassification` in `mode`; accuracy and macro-F1.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch import nn

from plmkit.core.errors import DataError, TaskError
from plmkit.core.processors import text_tokenizer
from plmkit.core.tasks import Task, TaskConfig
from plmkit.core.training import make_compute_metrics
from plmkit.vlp.configuration import MODES
from plmkit.vlp.data import load_builtin_pairs, read_pairs
from plmkit.vlp.images import image_transforms, load_rgb, timm_args
from plmkit.vlp.modeling import SemVLPPreTrainingOutput
from plmkit.vlp.retrieval import retrieval_metrics

__all__ = ["ImageTextClassificationConfig", "ImageTextClassificationTask", "ImageTextConfig", "ImageTextTask",
           "PairCollator"]

logger = logging.getLogger(__name__)

IMAGE = "image"
NO_ANSWER = -100


def _modes_help() -> str:
    return "single: [CLS] text [SEP] image with full self-attention; two: each modality through the shared layers, " \
           "cross-attention in the top layers"


@dataclass
class ImageTextConfig(TaskConfig):
    """Image-caption pairs (--data emoji, or csv/jsonl files with image paths and captions): image-text matching as
    the loss; matching accuracy and retrieval R@1/5/10 (matching head per mode, and embeddings) over the whole split."""

    image_column: str = field(default="image", metadata={"help": "the image path column of data files"})
    mode: str = field(default="single", metadata={"help": "forward mode when the method sets none (training under "
                                                          "finetune, evaluation losses): " + _modes_help(),
                                                  "choices": MODES})
    eval_modes: list[str] = field(default_factory=list, metadata={
        "help": "modes of the matching-head retrieval (default: mode), e.g. single,two"})
    itm_negative_probability: float = field(default=0.5, metadata={
        "help": "probability that a pair's caption is swapped for another image's (a mismatched pair)"})
    negative_seed: int = field(default=0, metadata={"help": "seed of the caption swaps (with the batch's example ids)"})
    augment: bool = field(default=False, metadata={"help": "timm's training augmentation for training batches"})
    answer_column: str = field(default="answer", metadata={"help": "the QA answer column, used when present"})
    check_images: bool = field(default=True, metadata={"help": "open every image when encoding (bad files fail early)"})
    retrieval: bool = field(default=True, metadata={"help": "retrieval metrics at every evaluation"})
    retrieval_pair_batch: int = field(default=256, metadata={"help": "image-text pairs per matching-head forward"})
    max_retrieval_examples: int = field(default=0, metadata={
        "help": "retrieve among the first N examples of the split only (0: the whole split)"})

    def validate(self) -> None:
        bad = [m for m in self.eval_modes if m not in MODES]
        if bad:
            raise TaskError(f"eval_modes must be among {list(MODES)}, got {bad}")
        if not 0.0 <= self.itm_negative_probability <= 1.0:
            raise TaskError(f"itm_negative_probability must be in [0, 1], got {self.itm_negative_probability}")
        if self.retrieval_pair_batch < 1:
            raise TaskError(f"retrieval_pair_batch must be >= 1, got {self.retrieval_pair_batch}")
        if self.max_retrieval_examples < 0:
            raise TaskError(f"max_retrieval_examples must be >= 0, got {self.max_retrieval_examples}")

    @property
    def retrieval_modes(self) -> list[str]:
        return list(self.eval_modes) or [self.mode]


@dataclass
class ImageTextClassificationConfig(TaskConfig):
    """A label per image-caption pair (--data emoji: the Unicode category; files: --label_column), predicted from
    the pooled [CLS] of SemVLP in single- or two-stream mode; accuracy and macro-F1."""

    image_column: str = field(default="image", metadata={"help": "the image path column of data files"})
    mode: str = field(default="single", metadata={"help": _modes_help(), "choices": MODES})
    augment: bool = field(default=False, metadata={"help": "timm's training augmentation for training batches"})
    check_images: bool = field(default=True, metadata={"help": "open every image when encoding (bad files fail early)"})


# ---------------------------------------------------------------------------------------------------------------
# Collation
# ---------------------------------------------------------------------------------------------------------------
class PairCollator:
    """Pads captions, loads and transforms images, and (for `image_text`) swaps captions to make mismatched pairs.

    Output: input_ids, attention_mask (token_type_ids), pixel_values, example_id, and itm_labels / labels /
    answer_targets where the task has them."""

    def __init__(self, tokenizer: Any, transforms: tuple[Callable, Callable], model: nn.Module | None = None,
                 negative_probability: float = 0.0, seed: int = 0, augment: bool = False,
                 cache_size: int = 4096) -> None:
        self.tokenizer = tokenizer
        self.train_transform, self.eval_transform = transforms
        self.model = model
        self.negative_probability = negative_probability
        self.seed = seed
        self.augment = augment
        self.cache_size = cache_size
        self._images: OrderedDict[str, Any] = OrderedDict()

    def image(self, path: str) -> Any:
        """The RGB image at `path` (kept in a small LRU cache of decoded images)."""
        if path in self._images:
            self._images.move_to_end(path)
            return self._images[path]
        img = load_rgb(path)
        self._images[path] = img
        if len(self._images) > self.cache_size:
            self._images.popitem(last=False)
        return img

    def pixels(self, paths: list[str], training: bool = False) -> torch.Tensor:
        transform = self.train_transform if (training and self.augment) else self.eval_transform
        return torch.stack([transform(self.image(p)) for p in paths])

    def swaps(self, example_ids: list[int], images: list[Any], owners: list[set]) -> list[int]:
        """For each row, the row whose caption it gets (itself when matched). Row i may take row j's caption only
        when image i is not among `owners[j]`, the images that caption belongs to."""
        rng = np.random.default_rng([self.seed, *example_ids])
        out = []
        for i in range(len(images)):
            partner = i
            if rng.random() < self.negative_probability:
                candidates = [j for j in range(len(images)) if images[i] not in owners[j]]
                if candidates:
                    partner = candidates[int(rng.integers(len(candidates)))]
            out.append(partner)
        return out

    @staticmethod
    def owners(features: list[dict[str, Any]]) -> tuple[list[Any], list[set]]:
        """(image key, the images each caption belongs to) of every row: from the split (`image_index`,
        `caption_owners`, added when the task encodes it), else from the batch alone."""
        if "caption_owners" in features[0]:
            return [int(f["image_index"]) for f in features], [set(f["caption_owners"]) for f in features]
        images = [str(f[IMAGE]) for f in features]
        captions = [tuple(f["input_ids"]) for f in features]
        by_caption: dict[tuple, set] = {}
        for image, text in zip(images, captions, strict=True):
            by_caption.setdefault(text, set()).add(image)
        return images, [by_caption[c] for c in captions]

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [int(f["example_id"]) for f in features]
        images = [str(f[IMAGE]) for f in features]
        text_keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in features[0]]
        texts = [{k: list(f[k]) for k in text_keys} for f in features]
        batch: dict[str, Any] = {}
        if self.negative_probability > 0:
            order = self.swaps(ids, *self.owners(features))
            texts = [texts[j] for j in order]
            batch["itm_labels"] = torch.tensor([int(j == i) for i, j in enumerate(order)], dtype=torch.long)
        elif "labels" not in features[0]:
            batch["itm_labels"] = torch.ones(len(features), dtype=torch.long)
        batch.update(self.tokenizer.pad(texts, return_tensors="pt"))
        training = bool(self.model is not None and self.model.training)
        batch["pixel_values"] = self.pixels(images, training)
        batch["example_id"] = torch.tensor(ids, dtype=torch.long)
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features])
        if "answer_targets" in features[0]:
            answers = torch.tensor([int(f["answer_targets"]) for f in features], dtype=torch.long)
            if "itm_labels" in batch:
                answers = torch.where(batch["itm_labels"].bool(), answers, torch.full_like(answers, NO_ANSWER))
            batch["answer_targets"] = answers
        return batch


def _transforms(processor: Any, model: nn.Module) -> tuple[Callable, Callable]:
    """The processor's image transforms (a TextImageProcessor), else timm's for the model's image encoder."""
    if hasattr(processor, "train_transform") and hasattr(processor, "eval_transform"):
        return processor.train_transform, processor.eval_transform
    config = model.config
    return image_transforms(config.timm_model_name, timm_args(config.timm_model_name, config.timm_model_args,
                                                              config.image_size))


# ---------------------------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------------------------
class _ImageTextTask(Task):
    batch_columns = (IMAGE, "image_index", "caption_owners")
    extra_columns: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.splits: DatasetDict | None = None

    # -- data ---------------------------------------------------------------------------------------------------------
    @property
    def description(self) -> str:
        return self.source.data or "files"

    def _records(self) -> dict[str, list[dict[str, Any]]]:
        s = self.source
        if s.data and s.train_file:
            raise DataError("pass either --data (a builtin dataset) or files (--train_file ...), not both")
        if s.data:
            return load_builtin_pairs(s.data)
        if not s.train_file:
            raise DataError("no data: pass --data emoji or --train_file FILE (csv/jsonl with image paths and captions)")
        text_column = s.text_columns[0] if s.text_columns else "text"
        files = {"train": s.train_file, "validation": s.validation_file, "test": s.test_file}
        return {split: read_pairs(path, self.config.image_column, text_column, split)
                for split, path in files.items() if path}

    def load(self) -> DatasetDict:
        records = self._records()
        # an extra column (answers, labels) counts when any training row has it (jsonl rows may leave it out)
        columns = (IMAGE, "text", *[c for c in self.extra_columns if any(c in r for r in records["train"])])
        splits = DatasetDict()
        for split, rows in records.items():
            data = {c: [r.get(c) for r in rows] for c in columns}
            for c in self.extra_columns:
                if c in data:
                    data[c] = ["" if v is None else str(v) for v in data[c]]
            splits[split] = Dataset.from_dict(data)
        self.splits = self.source.limit(splits)
        return self.splits

    def _loaded(self) -> DatasetDict:
        if self.splits is None:
            self.load()
        assert self.splits is not None
        return self.splits

    def check_config(self, config: Any, name: str) -> None:
        if getattr(config, "model_type", None) != "semvlp":
            raise TaskError(
                f"task {self.name} needs a SemVLP model; {name!r} is a {getattr(config, 'model_type', '?')} model. "
                f"Build one with `plmkit vlp init --output_dir DIR` (MiniLM trunk), or pass --model_name_or_path "
                f"semvlp --model_config '{{timm_model_name: resnet18}}' --tokenizer_name_or_path minilm")

    def _encode_split(self, ds: Dataset, split: str, tokenizer: Any, max_length: int) -> Dataset:
        texts = list(ds["text"])
        encoded = dict(tokenizer(texts, truncation=True, max_length=max_length))
        lengths = [len(x) for x in tokenizer(texts, add_special_tokens=True)["input_ids"]]
        truncated = sum(n > max_length for n in lengths)
        if truncated:
            message = (f"{split}: {truncated} of {len(texts)} captions are longer than max_length={max_length} tokens "
                       f"and were truncated (longest: {max(lengths)} tokens)")
            warnings.warn(message, stacklevel=3)
            logger.warning(message)
        paths = list(ds[IMAGE])
        if self.config.check_images:
            for path in dict.fromkeys(paths):
                load_rgb(path)
        data = {k: list(v) for k, v in encoded.items()}
        data[IMAGE] = paths
        data["example_id"] = list(range(len(ds)))
        index = {p: i for i, p in enumerate(dict.fromkeys(paths))}
        data["image_index"] = [index[p] for p in paths]
        owners: dict[str, set[int]] = {}
        for path, text in zip(paths, texts, strict=True):
            owners.setdefault(" ".join(text.split()), set()).add(index[path])
        data["caption_owners"] = [sorted(owners[" ".join(t.split())]) for t in texts]
        data.update(self.extra_encoded(ds, split))
        return Dataset.from_dict(data)

    def extra_encoded(self, ds: Dataset, split: str) -> dict[str, list]:
        return {}

    def encode(self, splits: DatasetDict, processor: Any, max_length: int,
               keep_columns: tuple[str, ...] = ()) -> DatasetDict:
        tokenizer = text_tokenizer(processor)
        out = DatasetDict()
        for split, ds in splits.items():
            missing = [c for c in keep_columns if c not in ds.column_names]
            if missing:
                raise DataError(f"the {split} split has no column(s) {missing} (needed by the method)")
            encoded = self._encode_split(ds, split, tokenizer, max_length)
            for c in keep_columns:
                encoded = encoded.add_column(c, list(ds[c]))
            out[split] = encoded
        return out


class ImageTextTask(_ImageTextTask):
    """Image-text matching and retrieval (see the module docstring)."""

    name = "image_text"
    config_class = ImageTextConfig
    config: ImageTextConfig
    model_kind = "masked-lm"  # SemVLPForPreTraining (registered for AutoModelForMaskedLM and AutoModelForPreTraining)

    @classmethod
    def contract_kit(cls) -> Any:
        from plmkit.vlp.testing import contract_kit

        return contract_kit()

    @property
    def extra_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.config.answer_column,)

    @property
    def main_metric(self) -> str:  # type: ignore[override]
        return f"itm_{self.config.retrieval_modes[0]}_t2i_r1"

    def answers(self) -> list[str]:
        """The answer set: the training split's non-empty answers, sorted (empty: no QA)."""
        train = self._loaded()["train"]
        column = self.config.answer_column
        if column not in train.column_names:
            return []
        return sorted({a for a in train[column] if a})

    def model_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"default_mode": self.config.mode}
        answers = self.answers()
        if answers:
            options["num_answers"] = len(answers)
        return options

    def extra_encoded(self, ds: Dataset, split: str) -> dict[str, list]:
        answers = self.answers()
        if not answers or self.config.answer_column not in ds.column_names:
            return {}
        index = {a: i for i, a in enumerate(answers)}
        return {"answer_targets": [index.get(a, NO_ANSWER) if a else NO_ANSWER for a in ds[self.config.answer_column]]}

    def collator(self, processor: Any, model: nn.Module) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        return PairCollator(text_tokenizer(processor), _transforms(processor, model), model,
                            self.config.itm_negative_probability, self.config.negative_seed, self.config.augment)

    def compute_metrics(self) -> Callable[..., dict[str, float]]:
        return make_compute_metrics(("accuracy",))

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        outputs = model(**inputs)
        if outputs.itm_loss is None:
            raise TaskError("image_text needs itm_labels in every batch (the task's collator makes them)")
        if model.training:
            return outputs.itm_loss, outputs
        return outputs.itm_loss, SemVLPPreTrainingOutput(logits=outputs.logits)

    def evaluate(self, trainer: Any, dataset: Any, prefix: str) -> dict[str, float]:
        metrics = dict(trainer.evaluate(dataset, metric_key_prefix=prefix))
        if self.config.retrieval:
            found = {f"{prefix}_{k}": v for k, v in self.retrieve(trainer, dataset).items()}
            trainer.log(found)
            metrics.update(found)
        return metrics

    @torch.no_grad()
    def retrieve(self, trainer: Any, dataset: Any) -> dict[str, float]:
        """Retrieval metrics of an encoded split (see `plmkit.vlp.retrieval`)."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        try:
            limit = self.config.max_retrieval_examples
            rows = dataset.select(range(min(limit, len(dataset)))) if limit else dataset
            collate = trainer.data_collator
            device = trainer.args.device
            paths = list(rows[IMAGE])
            distinct = list(dict.fromkeys(paths))
            where = {p: i for i, p in enumerate(distinct)}
            grids = []
            with trainer.autocast_smart_context_manager():
                for start in range(0, len(distinct), 64):
                    pixels = collate.pixels(distinct[start : start + 64]).to(device)
                    grids.append(model.semvlp.image_features(pixels).float())
            keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in rows.column_names]
            texts = collate.tokenizer.pad([{k: list(r[k]) for k in keys} for r in rows], return_tensors="pt")
            texts = {k: v.to(device) for k, v in texts.items()}
            return retrieval_metrics(model, texts, torch.cat(grids), [where[p] for p in paths],
                                     self.config.retrieval_modes, self.config.retrieval_pair_batch,
                                     trainer.autocast_smart_context_manager)
        finally:
            model.train(was_training)


class ImageTextClassificationTask(_ImageTextTask):
    """A label per image-text pair (see the module docstring)."""

    name = "image_text_classification"
    config_class = ImageTextClassificationConfig
    config: ImageTextClassificationConfig
    model_kind = "sequence-classification"
    main_metric = "accuracy"

    @property
    def extra_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.source.label_column,)

    def label_names(self) -> list[str]:
        train = self._loaded()["train"]
        column = self.source.label_column
        if column not in train.column_names:
            raise DataError(f"the training split has no label column {column!r} (choose it with --label_column)")
        return sorted(set(train[column]))

    def model_options(self) -> dict[str, Any]:
        names = self.label_names()
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {n: i for i, n in enumerate(names)}, "default_mode": self.config.mode}

    def extra_encoded(self, ds: Dataset, split: str) -> dict[str, list]:
        names = self.label_names()
        index = {n: i for i, n in enumerate(names)}
        column = self.source.label_column
        if column not in ds.column_names:
            raise DataError(f"the {split} split has no label column {column!r}")
        unknown = sorted({v for v in ds[column] if v not in index})
        if unknown:
            raise DataError(f"the {split} split has labels the training split lacks: {unknown[:5]}")
        return {"labels": [index[v] for v in ds[column]]}

    def collator(self, processor: Any, model: nn.Module) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        return PairCollator(text_tokenizer(processor), _transforms(processor, model), model,
                            augment=self.config.augment)

    def compute_metrics(self) -> Callable[..., dict[str, float]]:
        return make_compute_metrics(("accuracy", "macro_f1"))
