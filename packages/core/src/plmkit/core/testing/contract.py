"""The contract kit: checks every plmkit method passes, on a tiny model and the toy task, through `plmkit train`.

1. train -> save -> reload (`load_run`) gives the same outputs (test loss and logits);
2. `export` loads in plain transformers (or with `load_compacted`) with the same outputs, where the method exports;
3. an interrupted run resumed from its checkpoint ends with the same weights and metrics as an uninterrupted one;
4. for methods with extra data passes, 2 processes (gloo) give the same metrics as 1 with the same global batch;
5. a checkpoint stored in bf16 or fp16 trains (loaded in fp32, the loss falls, nothing is NaN);
6. with every method option left at its default, a short run of the real MiniLM on the builtin 6-class trec task
   beats the majority class by a margin (`check_default_learns`, slow: a default that silently does not train fails).

A method says how to exercise it through the class attribute `contract` (see `ContractCase`); the root test
`tests/test_contract.py` runs the kit for every installed method, and a package can run it for its own method:

    from plmkit.core.testing.contract import ContractCase, check_resume
    def test_my_method_resumes(tmp_path):
        check_resume(ContractCase("my_method", {"strength": 0.1}), tmp_path)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

__all__ = [
    "ContractCase",
    "check_ddp",
    "check_export",
    "check_half_precision_checkpoint",
    "check_default_learns",
    "check_resume",
    "check_save_reload",
    "contract_cases",
]


@dataclass
class ContractCase:
    """How to run one method in the kit.

    `options`: method options that suit the tiny model and a 16-step run (e.g. a teacher trained for 1 epoch);
    `flags`: extra `plmkit train` flags; `exports`: "transformers" (AutoModelForSequenceClassification loads the
    export), "compacted" (`plmkit.core.sparsity.load_compacted` loads it) or None; `extra_passes`: the method
    reads the training data outside the training loop (Fisher, importance, banks, anchors), so the 2-process check
    applies; `model`: the tiny alias; `task`: the task the method trains; `trec_defaults`: the method fine-tunes any
    sequence classifier, so `check_default_learns` runs it on MiniLM and TREC (off for methods that need their own
    architecture).
    """

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    exports: str | None = "transformers"
    extra_passes: bool = False
    model: str = "tiny-bert"
    task: str = "classification"
    trec_defaults: bool = True

    @property
    def id(self) -> str:
        return self.method if not self.options else f"{self.method}[{','.join(f'{k}={v}' for k, v in self.options.items())}]"

    def method_flags(self) -> list[str]:
        flags = ["--method", self.method]
        for key, value in self.options.items():
            flags += [f"--method.{key}", ",".join(map(str, value)) if isinstance(value, list) else str(value)]
        return flags


def contract_cases() -> list[ContractCase]:
    """Every installed method's cases: its `contract` attribute (a ContractCase or a list), else the defaults."""
    from plmkit.core.training import METHODS

    cases: list[ContractCase] = []
    for name in METHODS.names():
        declared = getattr(METHODS.get(name), "contract", None)
        if declared is None:
            cases.append(ContractCase(name))
        else:
            cases.extend(declared if isinstance(declared, list) else [declared])
    return cases


def _data(folder: Path) -> list[str]:
    from plmkit.core.testing import write_toy_files

    paths = write_toy_files(folder, n_train=64, n_eval=16)
    return [flag for split, path in paths.items() for flag in (f"--{split}_file", str(path))]


def _argv(case: ContractCase, data: list[str], out: Path, *flags: str) -> list[str]:
    return ["train", "--model_name_or_path", case.model, *data, "--output_dir", str(out), "--report_to", "none",
            "--disable_tqdm", "true", "--num_threads", "1", "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "16", "--learning_rate", "1e-3", "--max_steps", "16", "--seed", "3",
            "--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0",
            *case.flags, *case.method_flags(), *flags]


def _train(case: ContractCase, data: list[str], out: Path, *flags: str) -> dict[str, Any]:
    from plmkit.core.cli import main

    code = main(_argv(case, data, out, *flags))
    assert code == 0, f"{case.id}: plmkit train exited {code}"
    return json.loads((out / "metrics.json").read_text())


def _batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    return dict(tokenizer(["a good film", "the worst story", "who is it"], padding=True, return_tensors="pt"))


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") else out[0]


def check_save_reload(case: ContractCase, tmp: Path) -> Path:
    """Train, reload with `load_run`: the test loss equals the one measured at the end of training, and two reloads
    give identical logits. Returns the run folder."""
    from plmkit.core.run import evaluate_run, load_run

    data = _data(tmp / "data")
    out = tmp / "run"
    metrics = _train(case, data, out, "--save_strategy", "no")
    again = evaluate_run(out, "test")
    assert abs(again["test_loss"] - metrics["test_loss"]) <= 1e-5, (case.id, again["test_loss"], metrics["test_loss"])
    first, tokenizer, _, _ = load_run(out)
    second, _, _, _ = load_run(out)
    batch = _batch(tokenizer)
    torch.testing.assert_close(_logits(first, batch), _logits(second, batch), rtol=0, atol=0)
    return out


def check_export(case: ContractCase, run: Path, tmp: Path) -> None:
    """The export loads without plmkit's method code and gives the reloaded run's outputs (1e-5)."""
    from transformers import AutoModelForSequenceClassification

    from plmkit.core.run import export_run, load_run
    from plmkit.core.sparsity import load_compacted

    if case.exports is None:
        return
    model, tokenizer, _, _ = load_run(run)
    batch = _batch(tokenizer)
    expected = _logits(model, batch)
    target = export_run(run, tmp / "exported")
    if case.exports == "compacted":
        plain = load_compacted(AutoModelForSequenceClassification, target)
    else:
        plain = AutoModelForSequenceClassification.from_pretrained(target)
    torch.testing.assert_close(_logits(plain.eval(), batch), expected, rtol=0, atol=1e-5)


def check_resume(case: ContractCase, tmp: Path) -> None:
    """16 steps straight vs 8 steps, stop, resume from checkpoint-8 to 16: same final weights and metrics."""
    data = _data(tmp / "data")
    straight = tmp / "straight"
    full = _train(case, data, straight, "--save_strategy", "steps", "--save_steps", "8")
    resumed = tmp / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-8", resumed / "checkpoint-8")
    again = _train(case, data, resumed, "--save_strategy", "steps", "--save_steps", "8",
                   "--resume_from_checkpoint", str(resumed / "checkpoint-8"))
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=lambda m, k=key: f"{case.id} {k}: {m}")
    for key in ("eval_loss", "test_loss", "test_accuracy"):
        assert abs(full[key] - again[key]) <= 1e-5, (case.id, key, full[key], again[key])


def check_ddp(case: ContractCase, tmp: Path) -> None:
    """2 processes (torchrun, gloo, batch 4 each) give the metrics of 1 process with batch 8 (relative 1e-4): the same
    global batches for training and evaluation."""
    from plmkit.core.testing import run_cli

    if not case.extra_passes:
        return
    data = _data(tmp / "data")

    def run(out: Path, batch: int, processes: int, *extra: str) -> dict[str, Any]:
        argv = _argv(case, data, out, "--save_strategy", "no", "--train_sampling_strategy", "sequential", *extra)
        argv[argv.index("--per_device_train_batch_size") + 1] = str(batch)
        argv[argv.index("--per_device_eval_batch_size") + 1] = str(2 * batch)  # the same global batches
        run_cli(argv, processes)
        return json.loads((out / "metrics.json").read_text())

    two = run(tmp / "ddp", 4, 2, "--ddp_backend", "gloo")
    one = run(tmp / "single", 8, 1)
    for key in ("eval_loss", "eval_accuracy", "test_loss", "test_accuracy"):  # up to float reduction order
        assert abs(two[key] - one[key]) <= 1e-4 * max(1.0, abs(one[key])), (case.id, key, two[key], one[key])


def check_half_precision_checkpoint(case: ContractCase, tmp: Path, dtype: torch.dtype) -> None:
    """A checkpoint saved in `dtype` loads in float32 and trains: finite losses that fall."""
    from plmkit.core.models import load_model

    model, tokenizer = load_model(case.model, num_labels=2, seed=1)
    folder = tmp / f"checkpoint-{str(dtype).split('.')[-1]}"
    model.to(dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    loaded, _ = load_model(str(folder), num_labels=2)
    assert loaded.dtype == torch.float32
    half = ContractCase(case.method, case.options, case.flags, case.exports, case.extra_passes, str(folder))
    data = _data(tmp / "data")
    out = tmp / "half"
    metrics = _train(half, data, out, "--save_strategy", "no", "--logging_steps", "4", "--max_steps", "24",
                     "--learning_rate", "3e-3")
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if isinstance(v, float)), metrics
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    key = "loss/task" if any("loss/task" in h for h in history) else "loss"  # the task loss, not extra terms
    losses = [h[key] for h in history if key in h]
    assert len(losses) >= 2 and losses[-1] < losses[0], (case.id, key, losses)


# A short budget on real data: 1,024 TREC questions, 2 epochs of batch 16 (128 steps), lr 1e-4, 16 tokens (the
# question word and the first words decide the class; 80% of the questions fit), bf16;
# evaluation in batches of 64.
DEFAULT_BUDGET = ["--max_train_samples", "1024", "--num_train_epochs", "2", "--per_device_train_batch_size", "16",
                  "--per_device_eval_batch_size", "64", "--learning_rate", "1e-4", "--max_length", "16", "--bf16",
                  "true", "--seed", "42"]


def check_default_learns(case: ContractCase, tmp: Path, margin: float = 0.2) -> dict[str, Any]:
    """`plmkit train --data trec --model_name_or_path minilm --method NAME` with no method option (the budget above
    for every method): test accuracy at least `margin` above the majority class of the test split."""
    from collections import Counter

    from plmkit.core.cli import main
    from plmkit.core.data import load_builtin

    labels = load_builtin("trec").splits["test"]["label"]
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    out = tmp / "defaults"
    code = main(["train", "--data", "trec", "--model_name_or_path", "minilm", "--method", case.method,
                 *DEFAULT_BUDGET, "--output_dir", str(out), "--report_to", "none", "--disable_tqdm", "true",
                 "--save_strategy", "no", "--num_threads", "1"])
    assert code == 0, f"{case.method}: plmkit train exited {code}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= majority + margin, (case.method, metrics["test_accuracy"], majority)
    return metrics
