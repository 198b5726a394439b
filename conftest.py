"""Test-wide settings: never touch the network for models, keep torch to the free cores, fixed seeds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from plmkit.core.training import auto_num_threads  # noqa: E402

torch.set_num_threads(auto_num_threads())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    """Run the long tests (slow, ddp) first: with several workers (pytest-xdist) they spread over the workers and
    the short tests fill the gaps, instead of one long test finishing alone at the end."""
    long = [item for item in items if item.get_closest_marker("slow") or item.get_closest_marker("ddp")]
    short = [item for item in items if not (item.get_closest_marker("slow") or item.get_closest_marker("ddp"))]
    items[:] = long + short
