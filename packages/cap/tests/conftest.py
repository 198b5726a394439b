"""Shared fixtures: one thread (the machine is shared) and the tiny task as jsonl files for the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from plmkit.core.testing import tiny_dataset


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    paths = {}
    for split, ds in tiny_dataset(64, 16).items():
        paths[split] = folder / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in ds))
    return paths
