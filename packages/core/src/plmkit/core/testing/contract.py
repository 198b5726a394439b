"""The contract kit: checks every plmkit method passes, on a tiny model and a toy task, through `plmkit train`.

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

The case's `task` picks how checks 1 to 5 exercise the method (`TASK_KITS`, one `TaskKit` per task):

- `classification` (the default): the toy task's csv files (`write_toy_files`), no extra flag; the export loads in
  `AutoModelForSequenceClassification`; resume compares eval_loss, test_loss and test_accuracy; logits are those of
  three sentences.
- `masked_lm`: the same toy sentences as a .txt corpus (train/validation/test, one sentence a line) and
  `--task masked_lm`; the export loads in `AutoModelForMaskedLM` and holds nothing else (no method head); resume
  compares eval_loss, test_loss, test_masked_loss and test_masked_accuracy (evaluation masks are fixed per example,
  so they repeat); logits are those of three sentences with [MASK] tokens. Check 4 is skipped: training masks come
  from each process's own random stream, so 2 processes cannot see the masks of 1 (a case whose masks do not depend
  on the process says so with `process_independent_masks=True`, and then the check compares the token-weighted
  masked metrics). Check 6 runs classification cases only.

A task the kit does not know is an error naming those it does; a package with its own task can add a `TaskKit` to
`TASK_KITS`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from plmkit.core.testing import bf16_flags

__all__ = [
    "TASK_KITS",
    "ContractCase",
    "TaskKit",
    "check_ddp",
    "check_export",
    "check_half_precision_checkpoint",
    "check_default_learns",
    "check_resume",
    "check_save_reload",
    "contract_cases",
    "ddp_applies",
    "task_kit",
]


@dataclass
class ContractCase:
    """How to run one method in the kit.

    `options`: method options that suit the tiny model and a 16-step run (e.g. a teacher trained for 1 epoch);
    `flags`: extra `plmkit train` flags; `exports`: "transformers" (the task's Auto class loads the export:
    AutoModelForSequenceClassification for classification, AutoModelForMaskedLM for masked_lm), "compacted"
    (`plmkit.core.sparsity.load_compacted` loads it) or None; `extra_passes`: the method reads the training data
    outside the training loop (Fisher, importance, banks, anchors), so the 2-process check applies; `model`: the tiny
    alias; `task`: the task the method trains, a key of `TASK_KITS` (it picks the data, the `--task` flag, the
    metrics and the export's Auto class); `trec_defaults`: the method fine-tunes any sequence classifier, so
    `check_default_learns` runs it on MiniLM and TREC (off for methods that need their own architecture);
    `trec_budget`: flags of that run's budget (`DEFAULT_BUDGET`) that the method's defaults need changed, without
    their "--" (`{"num_train_epochs": 8}`): a method that refuses a budget with an error naming the option (the
    unstructured pruning methods' `min_steps`, CP-Tuning's examples per class) gets what it asks for;
    `process_independent_masks`: for a task that corrupts its training inputs at random (masked_lm), the masks do
    not depend on the process (drawn from the seed and the example, not from each process's random stream), so the
    2-process check can hold and runs; without it the kit skips that check for such a task.
    """

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    exports: str | None = "transformers"
    extra_passes: bool = False
    model: str = "tiny-bert"
    task: str = "classification"
    trec_defaults: bool = True
    trec_budget: dict[str, Any] = field(default_factory=dict)
    process_independent_masks: bool = False

    @property
    def id(self) -> str:
        return self.method if not self.options else f"{self.method}[{','.join(f'{k}={v}' for k, v in self.options.items())}]"

    def method_flags(self) -> list[str]:
        flags = ["--method", self.method]
        for key, value in self.options.items():
            flags += [f"--method.{key}", ",".join(map(str, value)) if isinstance(value, list) else str(value)]
        return flags


def contract_cases() -> list[ContractCase]:
    """Every installed method's cases: its `contract` attribute (a ContractCase or a list), else the defaults. A case
    on a task that is not installed (a method that also runs on another package's task) is left out."""
    from plmkit.core.tasks import TASKS
    from plmkit.core.training import METHODS

    known = set(TASK_KITS) | set(TASKS.names())
    cases: list[ContractCase] = []
    for name in METHODS.names():
        declared = getattr(METHODS.get(name), "contract", None)
        if declared is None:
            cases.append(ContractCase(name))
        else:
            cases.extend(c for c in (declared if isinstance(declared, list) else [declared]) if c.task in known)
    return cases


@dataclass(frozen=True)
class TaskKit:
    """How the kit exercises one task.

    `write_data(folder)`: writes the toy data (64 training, 16 validation and 16 test examples) under `folder` and
    returns its `plmkit train` data flags; `flags`: `plmkit train` flags the task needs, placed before the case's
    own; `resume_metrics`: the metrics.json keys `check_resume` compares; `ddp_metrics`: those `check_ddp` compares;
    `auto_class`: the name of the transformers Auto class that loads a "transformers" export; `model_kind`,
    `num_labels`: the `load_model` arguments of the model `check_half_precision_checkpoint` stores in half
    precision; `batch(tokenizer)`: the inputs whose logits checks 1 and 2 compare; `random_masks`: the task
    corrupts its training inputs from each process's random stream, so `check_ddp` runs only for cases with
    `process_independent_masks`; `exact_export`: a "transformers" export holds only the Auto class's weights (a
    method's extra modules, such as a projection head, must be gone); `build_model(folder)`: for a task whose models
    no alias builds (e.g. an image encoder plus a text trunk), saves a tiny model (and its processor) under `folder`
    and returns the path every check then trains from instead of the case's `model`.

    The core's tasks have their kits in `TASK_KITS`; a package's task gives its own from the classmethod
    `contract_kit()` of its `Task` class (registered under `plmkit.tasks`).

    The task-loss curve `check_half_precision_checkpoint` reads is the trainer's `loss/task` where the method adds
    loss terms, else `loss`, whatever the task.
    """

    write_data: Callable[[Path], list[str]]
    flags: tuple[str, ...]
    resume_metrics: tuple[str, ...]
    ddp_metrics: tuple[str, ...]
    auto_class: str
    model_kind: str
    num_labels: int | None
    batch: Callable[[Any], dict[str, torch.Tensor]]
    random_masks: bool = False
    exact_export: bool = False
    build_model: Callable[[Path], str] | None = None


def _flags(paths: dict[str, Path]) -> list[str]:
    return [flag for split, path in paths.items() for flag in (f"--{split}_file", str(path))]


def _data(folder: Path) -> list[str]:
    """The toy classification task as csv files (text, label)."""
    from plmkit.core.testing import write_toy_files

    return _flags(write_toy_files(folder, n_train=64, n_eval=16))


def _corpus_data(folder: Path) -> list[str]:
    """The toy task's sentences (labels dropped) as a masked_lm corpus: train.txt, validation.txt, test.txt, one
    sentence a line."""
    from plmkit.core.testing import tiny_dataset

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, ds in tiny_dataset(64, 16).items():
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text("\n".join(ds["text"]) + "\n")
    return _flags(paths)


def _batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    return dict(tokenizer(["a good film", "the worst story", "who is it"], padding=True, return_tensors="pt"))


def _masked_sentences(tokenizer: Any) -> dict[str, torch.Tensor]:
    mask = tokenizer.mask_token
    texts = [f"a good {mask}", f"the {mask} story", f"{mask} is it"]
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


TASK_KITS: dict[str, TaskKit] = {
    "classification": TaskKit(
        write_data=_data,
        flags=(),
        resume_metrics=("eval_loss", "test_loss", "test_accuracy"),
        ddp_metrics=("eval_loss", "eval_accuracy", "test_loss", "test_accuracy"),
        auto_class="AutoModelForSequenceClassification",
        model_kind="sequence-classification",
        num_labels=2,
        batch=_batch,
    ),
    # eval_loss is transformers' mean of per-batch losses, which depends on how the tokens fall into batches, so the
    # 2-process check compares the token-weighted masked_loss instead.
    "masked_lm": TaskKit(
        write_data=_corpus_data,
        flags=("--task", "masked_lm"),
        resume_metrics=("eval_loss", "test_loss", "test_masked_loss", "test_masked_accuracy"),
        ddp_metrics=("eval_masked_loss", "eval_masked_accuracy", "test_masked_loss", "test_masked_accuracy"),
        auto_class="AutoModelForMaskedLM",
        model_kind="masked-lm",
        num_labels=None,
        batch=_masked_sentences,
        random_masks=True,
        exact_export=True,
    ),
}


def task_kit(case: ContractCase) -> TaskKit:
    """The `TaskKit` of the case's task: `TASK_KITS`, else the registered task's `contract_kit()`; a task with no kit
    is a ValueError naming those the kit knows."""
    from plmkit.core.errors import TaskError
    from plmkit.core.tasks import TASKS

    kit = TASK_KITS.get(case.task)
    if kit is None:
        try:
            kit = TASKS.get(case.task).contract_kit()
        except TaskError:  # not a registered task
            kit = None
    if kit is None:
        raise ValueError(f"{case.id}: the contract kit does not know task {case.task!r}; it runs "
                         f"{', '.join(sorted(TASK_KITS))} and the registered tasks whose `contract_kit()` returns a "
                         "TaskKit")
    return kit


def _case_data(case: ContractCase, folder: Path) -> list[str]:
    return task_kit(case).write_data(folder)


def _with_model(case: ContractCase, tmp: Path) -> ContractCase:
    """The case with the tiny model its task kit builds under `tmp` (unchanged for a task whose models an alias
    builds)."""
    build = task_kit(case).build_model
    return case if build is None else dataclasses.replace(case, model=build(tmp / "model"))


def _argv(case: ContractCase, data: list[str], out: Path, *flags: str) -> list[str]:
    return ["train", "--model_name_or_path", case.model, *data, "--output_dir", str(out), "--report_to", "none",
            "--disable_tqdm", "true", "--num_threads", "1", "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "16", "--learning_rate", "1e-3", "--max_steps", "16", "--seed", "3",
            "--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0",
            *task_kit(case).flags, *case.flags, *case.method_flags(), *flags]


def _train(case: ContractCase, data: list[str], out: Path, *flags: str) -> dict[str, Any]:
    from plmkit.core.cli import main

    code = main(_argv(case, data, out, *flags))
    assert code == 0, f"{case.id}: plmkit train exited {code}"
    return json.loads((out / "metrics.json").read_text())


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") else out[0]


def check_save_reload(case: ContractCase, tmp: Path) -> Path:
    """Train, reload with `load_run`: the test loss equals the one measured at the end of training, and two reloads
    give identical logits (on the task's test batch). Returns the run folder."""
    from plmkit.core.run import evaluate_run, load_run

    kit = task_kit(case)
    case = _with_model(case, tmp)
    data = _case_data(case, tmp / "data")
    out = tmp / "run"
    metrics = _train(case, data, out, "--save_strategy", "no")
    again = evaluate_run(out, "test")
    assert abs(again["test_loss"] - metrics["test_loss"]) <= 1e-5, (case.id, again["test_loss"], metrics["test_loss"])
    first, tokenizer, _, _ = load_run(out)
    second, _, _, _ = load_run(out)
    batch = kit.batch(tokenizer)
    torch.testing.assert_close(_logits(first, batch), _logits(second, batch), rtol=0, atol=0)
    return out


def check_export(case: ContractCase, run: Path, tmp: Path) -> None:
    """The export loads without plmkit's method code, in the task's Auto class, and gives the reloaded run's outputs
    (1e-5). For a task with `exact_export` (masked_lm), the export holds no weight the Auto class does not use."""
    import transformers

    from plmkit.core.run import export_run, load_run
    from plmkit.core.sparsity import load_compacted

    kit = task_kit(case)
    if case.exports is None:
        return
    auto = getattr(transformers, kit.auto_class)
    model, tokenizer, _, _ = load_run(run)
    batch = kit.batch(tokenizer)
    expected = _logits(model, batch)
    target = export_run(run, tmp / "exported")
    if case.exports == "compacted":
        plain = load_compacted(auto, target)
    elif kit.exact_export:
        plain, info = auto.from_pretrained(target, output_loading_info=True)
        assert not info["unexpected_keys"], (case.id, "weights the export should not hold",
                                             sorted(info["unexpected_keys"]))
    else:
        plain = auto.from_pretrained(target)
    torch.testing.assert_close(_logits(plain.eval(), batch), expected, rtol=0, atol=1e-5)


def check_resume(case: ContractCase, tmp: Path) -> None:
    """16 steps straight vs 8 steps, stop, resume from checkpoint-8 to 16: same final weights (every tensor of
    model.safetensors, a method's own modules included) and the task's metrics."""
    kit = task_kit(case)
    case = _with_model(case, tmp)
    data = _case_data(case, tmp / "data")
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
    for key in kit.resume_metrics:
        assert abs(full[key] - again[key]) <= 1e-5, (case.id, key, full[key], again[key])


def ddp_applies(case: ContractCase) -> bool:
    """Whether `check_ddp` runs for the case: the method has extra data passes, and the task does not draw training
    masks from each process's random stream (or the case says its masks do not depend on the process)."""
    kit = task_kit(case)
    return case.extra_passes and (not kit.random_masks or case.process_independent_masks)


def check_ddp(case: ContractCase, tmp: Path) -> None:
    """2 processes (torchrun, gloo, batch 4 each) give the metrics of 1 process with batch 8 (relative 1e-4): the same
    global batches for training and evaluation.

    Runs for cases with `extra_passes` only. For a task whose training masks come from each process's random stream
    (masked_lm), 2 processes train on other masks than 1, so the check returns without running unless the case sets
    `process_independent_masks`."""
    from plmkit.core.testing import run_cli

    kit = task_kit(case)
    if not ddp_applies(case):
        return
    case = _with_model(case, tmp)
    data = _case_data(case, tmp / "data")

    def run(out: Path, batch: int, processes: int, *extra: str) -> dict[str, Any]:
        argv = _argv(case, data, out, "--save_strategy", "no", "--train_sampling_strategy", "sequential", *extra)
        argv[argv.index("--per_device_train_batch_size") + 1] = str(batch)
        argv[argv.index("--per_device_eval_batch_size") + 1] = str(2 * batch)  # the same global batches
        run_cli(argv, processes)
        return json.loads((out / "metrics.json").read_text())

    two = run(tmp / "ddp", 4, 2, "--ddp_backend", "gloo")
    one = run(tmp / "single", 8, 1)
    for key in kit.ddp_metrics:  # up to float reduction order
        assert abs(two[key] - one[key]) <= 1e-4 * max(1.0, abs(one[key])), (case.id, key, two[key], one[key])


def check_half_precision_checkpoint(case: ContractCase, tmp: Path, dtype: torch.dtype) -> None:
    """A checkpoint of the task's model kind saved in `dtype` loads in float32 and trains: finite losses that fall."""
    from plmkit.core.models import load_model

    kit = task_kit(case)
    case = _with_model(case, tmp)
    model, tokenizer = load_model(case.model, kind=kit.model_kind, num_labels=kit.num_labels, seed=1)
    folder = tmp / f"checkpoint-{str(dtype).split('.')[-1]}"
    model.to(dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    loaded, _ = load_model(str(folder), kind=kit.model_kind, num_labels=kit.num_labels)
    assert loaded.dtype == torch.float32
    half = dataclasses.replace(case, model=str(folder))
    data = _case_data(case, tmp / "data")
    out = tmp / "half"
    metrics = _train(half, data, out, "--save_strategy", "no", "--logging_steps", "4", "--max_steps", "24",
                     "--learning_rate", "3e-3")
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if isinstance(v, float)), metrics
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    key = "loss/task" if any("loss/task" in h for h in history) else "loss"  # the task loss, not extra terms
    losses = [h[key] for h in history if key in h]
    assert len(losses) >= 2 and losses[-1] < losses[0], (case.id, key, losses)


# A short budget on real data: 1,024 TREC questions, 2 epochs of batch 16 (128 steps), lr 1e-4, 16 tokens (the
# question word and the first words decide the class; 80% of the questions fit), bf16 (fp32 in the test on a CPU
# without native bf16: `trec_check_budget`); evaluation in batches of 64.
DEFAULT_BUDGET = ["--max_train_samples", "1024", "--num_train_epochs", "2", "--per_device_train_batch_size", "16",
                  "--per_device_eval_batch_size", "64", "--learning_rate", "1e-4", "--max_length", "16", "--bf16",
                  "true", "--seed", "42"]


def trec_budget(overrides: dict[str, Any] | None = None) -> list[str]:
    """`DEFAULT_BUDGET` with some of its flags' values replaced (`{"num_train_epochs": 8}`)."""
    flags = list(DEFAULT_BUDGET)
    for name, value in (overrides or {}).items():
        if f"--{name}" not in flags:
            raise ValueError(f"trec_budget: {name!r} is not a flag of DEFAULT_BUDGET ({DEFAULT_BUDGET[::2]})")
        flags[flags.index(f"--{name}") + 1] = str(value)
    return flags


def trec_check_budget(overrides: dict[str, Any] | None = None) -> list[str]:
    """`trec_budget(overrides)` as the test runs it: in fp32 (without `--bf16 true`) on a CPU without native bf16."""
    flags = trec_budget(overrides)
    i = flags.index("--bf16")
    return flags[:i] + bf16_flags() + flags[i + 2:]


def check_default_learns(case: ContractCase, tmp: Path, margin: float = 0.2) -> dict[str, Any]:
    """`plmkit train --data trec --model_name_or_path minilm --method NAME` with no method option (the budget above,
    with `case.trec_budget`'s changes): test accuracy at least `margin` above the majority class of the test split."""
    from collections import Counter

    from plmkit.core.cli import main
    from plmkit.core.data import load_builtin

    if case.task != "classification":
        raise ValueError(f"{case.id}: check_default_learns trains on TREC, a classification task; the case's task is "
                         f"{case.task!r}")
    labels = load_builtin("trec").splits["test"]["label"]
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    out = tmp / "defaults"
    code = main(["train", "--data", "trec", "--model_name_or_path", "minilm", "--method", case.method,
                 *trec_check_budget(case.trec_budget), "--output_dir", str(out), "--report_to", "none",
                 "--disable_tqdm", "true", "--save_strategy", "no", "--num_threads", "1"])
    assert code == 0, f"{case.method}: plmkit train exited {code}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= majority + margin, (case.method, metrics["test_accuracy"], majority)
    return metrics
