"""capt under DDP (gloo, 2 processes): the gathered NT-Xent gives the gradient of the global batch's loss, and a
torchrun training run works (the projection head and the clean view used inside DDP's forward)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from plmkit.capt import gather_with_grad
from plmkit.core.losses import nt_xent
from plmkit.core.testing import run_cli

from .conftest import TINY

pytestmark = pytest.mark.ddp

N, D, TAU = 6, 5, 0.2


def _views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, D, generator=g), torch.randn(N, D, generator=g)


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        a, b = _views()
        rows = slice(rank * N // world, (rank + 1) * N // world)
        mine_a, mine_b = a[rows].clone().requires_grad_(), b[rows].clone().requires_grad_()
        loss = nt_xent(gather_with_grad(mine_a), gather_with_grad(mine_b), TAU)
        loss.backward()
        # DDP averages parameter gradients over processes: divide by world as it would
        torch.save({"loss": loss.detach(), "a": mine_a.grad / world, "b": mine_b.grad / world}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_gathered_views_give_the_global_batch_gradient(tmp_path):
    world = 2
    # fork: the workers inherit this process's imports (spawn would import torch and plmkit again in each, ~10 s)
    mp.start_processes(_worker, args=(world, f"file://{tmp_path / 'init'}", str(tmp_path / "grad")), nprocs=world,
                       start_method="fork")
    a, b = (v.clone().requires_grad_() for v in _views())
    loss = nt_xent(a, b, TAU)
    loss.backward()
    parts = [torch.load(f"{tmp_path / 'grad'}.{r}", weights_only=True) for r in range(world)]
    for part in parts:
        torch.testing.assert_close(part["loss"], loss.detach())
    torch.testing.assert_close(torch.cat([p["a"] for p in parts]), a.grad)
    torch.testing.assert_close(torch.cat([p["b"] for p in parts]), b.grad)


def test_torchrun_training_with_two_processes(corpus, tmp_path):
    out = tmp_path / "ddp"
    run_cli(["train", "--task", "masked_lm", "--train_file", str(corpus["train"]), *TINY, "--output_dir", str(out),
             "--ddp_backend", "gloo", "--max_steps", "6", "--per_device_train_batch_size", "4", "--logging_steps", "2",
             "--save_strategy", "no", "--method", "capt", "--method.queue_size", "8"], processes=2, timeout=300)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["capt_queue_filled"] == 8  # 2 steps of the global batch (2 x 4 clean views each)
    assert metrics["capt_geometry"][-1]["examples"] > 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("loss/capt" in h for h in history)
