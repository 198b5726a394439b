"""Fixtures of the plmkit-vlp tests (the helpers are plmkit.vlp.testing)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from plmkit.vlp.testing import tiny_folder, write_image_text


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return tiny_folder(tmp_path_factory.mktemp("semvlp") / "model")


@pytest.fixture(scope="session")
def image_text_files(tmp_path_factory) -> dict[str, Path]:
    return write_image_text(tmp_path_factory.mktemp("image_text"))
