"""Tiny VECO models built in code (hidden 32, 2 layers), shared by the tests."""

import pytest
import torch

from plmkit.core.models import register_model_types
from plmkit.veco.modeling import VecoForPreTraining
from plmkit.veco.tiny import tiny_model_config, tiny_tokenizer

register_model_types()


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def pretrained_dir(tmp_path_factory, tokenizer):
    """A tiny VecoForPreTraining folder (random weights) with its tokenizer."""
    torch.manual_seed(0)
    model = VecoForPreTraining(tiny_model_config(tokenizer))
    folder = tmp_path_factory.mktemp("tiny_veco")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
