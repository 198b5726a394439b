"""Shared fixtures: the reference golden values and the tiny BERT they were computed on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from plmkit.core.testing import tiny_model

GOLDEN = Path(__file__).parent / "data" / "reference_golden.safetensors"


class Golden:
    """Values computed once with the authors' code (alibaba/AliceMind `ChildTuning/`, run on torch 2.14 / numpy 2.4).

    A tiny BERT (hidden 16, 2 layers, dropout off) with stored initial weights; four fixed batches of four examples;
    the reference Fisher pass (squared per-tensor-clipped batch gradients, 'layer' tensors, np.percentile threshold,
    reserve_p 0.3) and its mask; the weights after three D steps of the reference `ChildTuningAdamW` (lr 1e-3,
    weight decay 0.01 except bias/LayerNorm, eps 1e-8, global clip 1.0 before each step). See `metadata`.
    """

    def __init__(self, path: Path) -> None:
        with safe_open(str(path), "pt") as f:
            self.metadata = f.metadata()
            self.tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        self.batches = [self.part(f"batch{i}") for i in range(4)]
        self.mask = {k: v.bool() for k, v in self.part("mask").items()}
        self.init, self.after_three_steps = self.part("init"), self.part("d3")

    def part(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) + 1 :]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}

    def model(self) -> torch.nn.Module:
        model, _ = tiny_model("bert", **json.loads(self.metadata["overrides"]))
        model.load_state_dict(self.init, strict=True)
        return model.train()


@pytest.fixture(scope="session")
def golden() -> Golden:
    return Golden(GOLDEN)
