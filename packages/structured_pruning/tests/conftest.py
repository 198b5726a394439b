"""Shared helpers: short training runs of a method on a tiny model through the core Trainer."""

from __future__ import annotations

import pytest
import torch
from transformers import DataCollatorWithPadding, TrainingArguments

from plmkit.core.testing import tiny_dataset, tiny_model
from plmkit.core.training import Method, Trainer


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _inputs_for(model, batch=3, length=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (batch, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _train_tiny(method: Method, kind: str = "bert", dataset=None, tmp_path=None, epochs: int = 2, **args):
    """Train ``method`` on a tiny model for a few steps; return (trainer, model, tokenizer)."""
    model, tokenizer = tiny_model(kind)
    data = dataset if dataset is not None else tiny_dataset(64, 16)
    encoded = data.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])
    encoded = encoded.rename_column("label", "labels")
    training = TrainingArguments(
        str(tmp_path or "/tmp/plmkit-sp-test"), per_device_train_batch_size=16, num_train_epochs=epochs,
        learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
        disable_tqdm=True, seed=0, **args,
    )
    trainer = Trainer(model, training, method=method, train_dataset=encoded["train"],
                      data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    return trainer, model.eval(), tokenizer


@pytest.fixture
def inputs_for():
    """Random token ids for a tiny model: ``inputs_for(model, batch=3, length=8, seed=0)``."""
    return _inputs_for


@pytest.fixture
def train_tiny():
    """``train_tiny(method, kind, dataset=None, tmp_path=None, epochs=2, **training_args)``."""
    return _train_tiny
