"""Tiny models and tiny datasets shared by every package's tests (built in code, nothing downloaded)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from plmkit.core.models import load_model

__all__ = ["tiny_dataset", "tiny_model", "write_toy_files"]

# Each label has its own cue words, so a tiny model can learn the task in a few dozen steps.
_CUES = [["good", "great", "best", "love", "fun"], ["bad", "terrible", "worst", "hate", "dull"], ["what", "who", "where"]]
_FILLER = "the a movie film story is was it this that and of".split()


def tiny_model(
    kind: str = "bert", task: str = "sequence-classification", num_labels: int = 2, dropout: bool = False, **overrides: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A random 2-layer model (`kind` in bert, roberta, xlmr, gpt2), dropout off by default for exact tests."""
    if not dropout:
        overrides = {**_no_dropout(kind), **overrides}
    return load_model(f"tiny-{kind}", task=task, num_labels=num_labels, **overrides)


def _no_dropout(kind: str) -> dict[str, float]:
    if kind == "gpt2":
        return {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    return {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def tiny_dataset(n_train: int = 64, n_eval: int = 32, num_labels: int = 2, seed: int = 0) -> DatasetDict:
    """A learnable toy classification task with train/validation/test splits (columns `text`, `label`)."""
    if not 2 <= num_labels <= len(_CUES):
        raise ValueError(f"num_labels must be in [2, {len(_CUES)}], got {num_labels}")
    rng = random.Random(seed)
    features = Features({"text": Value("string"), "label": ClassLabel(names=[f"class_{i}" for i in range(num_labels)])})

    def make(n: int) -> Dataset:
        rows = {"text": [], "label": []}
        for i in range(n):
            label = i % num_labels
            words = rng.sample(_FILLER, 4) + [rng.choice(_CUES[label])]
            rng.shuffle(words)
            rows["text"].append(" ".join(words))
            rows["label"].append(label)
        return Dataset.from_dict(rows, features=features)

    return DatasetDict(train=make(n_train), validation=make(n_eval), test=make(n_eval))


def write_toy_files(folder: str | Path, n_train: int = 64, n_eval: int = 32, fmt: str = "csv") -> dict[str, Path]:
    """`tiny_dataset` as train/validation/test files (csv or jsonl), for tests that go through `plmkit train`."""
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"fmt must be 'csv' or 'jsonl', got {fmt!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, ds in tiny_dataset(n_train, n_eval).items():
        paths[split] = folder / f"{split}.{fmt}"
        if fmt == "csv":
            ds.to_csv(str(paths[split]), index=False)
        else:
            paths[split].write_text("".join(json.dumps(row) + "\n" for row in ds))
    return paths
