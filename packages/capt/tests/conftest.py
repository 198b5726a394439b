"""Shared fixtures: one thread (the machine is shared) and the toy sentences as a masked_lm corpus (.txt files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from plmkit.core.testing import tiny_dataset

TINY = ["--model_name_or_path", "tiny-bert", "--report_to", "none", "--disable_tqdm", "true", "--num_threads", "1",
        "--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def write_corpus(folder: Path, n_train: int = 64, n_eval: int = 16) -> dict[str, Path]:
    """The toy task's sentences, one per line: train.txt, validation.txt, test.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, ds in tiny_dataset(n_train, n_eval).items():
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text("\n".join(ds["text"]) + "\n")
    return paths


def corpus_flags(paths: dict[str, Path]) -> list[str]:
    return [flag for split, path in paths.items() for flag in (f"--{split}_file", str(path))]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))
