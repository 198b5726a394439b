"""Tiny models and tiny datasets shared by every package's tests (built in code, nothing downloaded)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from plmkit.core.models import load_model

__all__ = ["LegacyAdamW", "LegacyEpsAdamW", "free_port", "load_script", "run_cli", "tiny_dataset", "tiny_model",
           "write_tarball", "write_toy_files"]

# Each label has its own cue words, so a tiny model can learn the task in a few dozen steps.
_CUES = [["good", "great", "best", "love", "fun"], ["bad", "terrible", "worst", "hate", "dull"], ["what", "who", "where"]]
_FILLER = "the a movie film story is was it this that and of".split()


def bf16_flags() -> list[str]:
    """`["--bf16", "true"]` where bf16 autocast is fast (a GPU, or a CPU with native bf16), else none: the real-model
    tests then train in fp32, which on an AVX2-only CPU is several times faster than emulated bf16."""
    from plmkit.core.training import fast_bf16  # here: plmkit.core.training imports this package

    return ["--bf16", "true"] if fast_bf16() else []


def load_script(path: str | Path, name: str | None = None) -> Any:
    """The Python file at `path` (a benchmark script, which is not part of any package) imported as a module named
    `name` (default: its parent folder's parent and its stem, e.g. `veco_reproduce`), for tests of its functions."""
    import importlib.util

    path = Path(path)
    name = name or f"{path.parent.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path} as a module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port nobody listens on now, for a torchrun rendezvous (tests may run in parallel processes)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_tarball(path: Path, files: dict[str, bytes]) -> str:
    """A .tgz at `path` holding `files` (archive name -> bytes), as a package registry serves one; returns its
    SHA-256 (for tests of `plmkit.core.data.fetch_checked` users with a fake download)."""
    import hashlib
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_cli(argv: list[str], processes: int = 1, timeout: float = 600) -> None:
    """`plmkit ARGV`, asserting exit code 0: in this process when `processes` is 1 (no second interpreter start-up,
    several seconds), else under torchrun with that many worker processes, one torch thread each, on a free port
    (pass `--ddp_backend gloo` in `argv` on CPU)."""
    import os
    import subprocess
    import sys

    from plmkit.core.cli import main

    if processes == 1:
        code = main(list(argv))
        assert code == 0, f"plmkit {' '.join(argv[:1])} exited {code}"
        return
    env = {**os.environ, "PLMKIT_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
           str(free_port()), "-m", "plmkit.core.cli", *argv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]


def tiny_model(
    kind: str = "bert", head: str = "sequence-classification", num_labels: int = 2, dropout: bool = False,
    **overrides: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A random 2-layer model (`kind` in bert, roberta, xlmr, gpt2) with `head` (a `load_model` kind), dropout off by
    default for exact tests."""
    if not dropout:
        overrides = {**_no_dropout(kind), **overrides}
    return load_model(f"tiny-{kind}", kind=head, num_labels=num_labels, **overrides)


def _no_dropout(kind: str) -> dict[str, float]:
    if kind == "gpt2":
        return {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    return {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def tiny_dataset(n_train: int = 64, n_eval: int = 32, num_labels: int = 2, seed: int = 0) -> DatasetDict:
    """A learnable toy classification task with train/validation/test splits (columns `text`, `label`)."""
    if not 2 <= num_labels <= len(_CUES):
        raise ValueError(f"num_labels must be in [2, {len(_CUES)}], got {num_labels}")
    rng = random.Random(seed)
    features = Features({"text": Value("string"), "label": ClassLabel(names=[f"class_{i}" for i in range(num_labels)])})

    def make(n: int) -> Dataset:
        rows = {"text": [], "label": []}
        for i in range(n):
            label = i % num_labels
            words = rng.sample(_FILLER, 4) + [rng.choice(_CUES[label])]
            rng.shuffle(words)
            rows["text"].append(" ".join(words))
            rows["label"].append(label)
        return Dataset.from_dict(rows, features=features)

    return DatasetDict(train=make(n_train), validation=make(n_eval), test=make(n_eval))


def write_toy_files(folder: str | Path, n_train: int = 64, n_eval: int = 32, fmt: str = "csv") -> dict[str, Path]:
    """`tiny_dataset` as train/validation/test files (csv or jsonl), for tests that go through `plmkit train`."""
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"fmt must be 'csv' or 'jsonl', got {fmt!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, ds in tiny_dataset(n_train, n_eval).items():
        paths[split] = folder / f"{split}.{fmt}"
        if fmt == "csv":
            ds.to_csv(str(paths[split]), index=False)
        else:
            paths[split].write_text("".join(json.dumps(row) + "\n" for row in ds))
    return paths


class LegacyAdamW(torch.optim.Optimizer):
    """The AdamW of transformers <= 4.x, which the papers' reference code trains with, for parity tests: bias
    corrections folded into the step size, eps added to sqrt(v) (not to the bias-corrected sqrt(v_hat)), weight
    decay applied after the Adam step."""

    def __init__(self, params: Any, lr: float, eps: float = 1e-8, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["step"] += 1
                state["m"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                step_size = group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
                p.addcdiv_(state["m"], state["v"].sqrt().add_(group["eps"]), value=-step_size)
                p.add_(p, alpha=-group["lr"] * group["weight_decay"])


class LegacyEpsAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` with eps_t = eps / sqrt(1 - beta2^t): the same update as :class:`LegacyAdamW` except
    for the order of weight decay (torch decays before the step; the difference is O(lr^2 * wd) per step), so a
    test can drive the real Trainer's optimizer code with the reference's update."""

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        for group in self.param_groups:
            group.setdefault("legacy_eps", group["eps"])

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        for group in self.param_groups:
            t = 1 + max((int(self.state[p]["step"]) for p in group["params"] if p in self.state), default=0)
            group["eps"] = group["legacy_eps"] / math.sqrt(1 - group["betas"][1] ** t)
        return super().step(closure)
