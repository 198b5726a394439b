"""Shared fixtures: one torch thread (the machine is shared), tiny tokenizer/model helpers."""

from __future__ import annotations

import pytest
import torch

TINY = ["--model_name_or_path", "tiny-bert", "--report_to", "none", "--disable_tqdm", "true", "--num_threads", "1",
        "--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
