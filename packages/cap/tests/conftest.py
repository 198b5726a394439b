"""Shared fixtures: one thread (the machine is shared) and the tiny task as jsonl files for the CLI."""

from __future__ import annotations

import pytest
import torch

from plmkit.core.testing import write_toy_files


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    return write_toy_files(tmp_path_factory.mktemp("data"), 64, 16, fmt="jsonl")
