"""A run, end to end: task data -> model -> method -> Trainer -> metrics.json, and reloading, evaluating, exporting it.

A run folder (`--output_dir`) holds:
- `plmkit_config.yaml`: the resolved experiment config (re-runnable with `plmkit train`),
- the trained model as safetensors with its config and tokenizer (the method's layers included, e.g. PST factors),
- `metrics.json`: train metrics, `eval_*` (validation) / `test_*` (test) metrics (HF naming), and the method's
  `report()`; `trainer_state.json`: the training log (losses, learning rates, loss terms per logging step),
- `runs/`: tensorboard logs, and `checkpoint-*` folders (with the method's state) if saving was on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file
from transformers import PrinterCallback, ProgressCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from plmkit.core.config import ExperimentConfig, parse_experiment, parse_section_options
from plmkit.core.errors import DataError, RunError, RunExistsError
from plmkit.core.models import load_model
from plmkit.core.tasks import DataSource, Task, build_task
from plmkit.core.training import (
    Method,
    MethodContext,
    Trainer,
    auto_num_threads,
    build_method,
    prepare_model,
    slow_bf16_warning,
)

__all__ = ["RunExistsError", "build_run_task", "evaluate_run", "export_run", "load_run", "train"]

CONFIG_FILE = "plmkit_config.yaml"
METRICS_FILE = "metrics.json"


def build_run_task(cfg: ExperimentConfig) -> Task:
    """The experiment's task, reading its data from the run's data arguments."""
    return build_task(cfg.task_name, cfg.task_options, DataSource.from_args(cfg.data))


def _check_output_dir(cfg: ExperimentConfig) -> str | bool | None:
    """Refuse to overwrite a previous run; return what to pass as `resume_from_checkpoint`."""
    out = Path(cfg.training.output_dir)
    resume = cfg.training.resume_from_checkpoint
    if resume is not None:
        if str(resume).lower() in ("true", "last"):
            last = get_last_checkpoint(str(out)) if out.is_dir() else None
            if last is None:
                raise RunExistsError(f"--resume_from_checkpoint: no checkpoint-* folder in {out} to resume from")
            return last
        if not Path(resume).is_dir():
            raise RunExistsError(f"--resume_from_checkpoint: {resume} is not a checkpoint folder")
        return str(resume)
    if out.is_dir() and any(out.iterdir()) and not cfg.run.overwrite_output_dir:
        raise RunExistsError(
            f"output folder {out} already holds files (a previous run?). Pass --overwrite_output_dir to write over "
            f"it, --resume_from_checkpoint true to continue it, or choose another --output_dir."
        )
    return None


def _log(msg: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[plmkit] {msg}", file=sys.stderr, flush=True)


def _trainer(cfg: ExperimentConfig, model: Any, processor: Any, method: Method, task: Task, **kwargs: Any) -> Trainer:
    return Trainer(
        model,
        cfg.training,
        method=method,
        task=task,
        data_collator=task.collator(processor, model),
        processing_class=processor,
        compute_metrics=task.compute_metrics(),
        **kwargs,
    )


def train(cfg: ExperimentConfig) -> dict[str, float]:
    """Run an experiment; return (and write to metrics.json) its metrics."""
    resume = _check_output_dir(cfg)
    threads = cfg.run.num_threads or auto_num_threads()
    torch.set_num_threads(threads)
    set_seed(cfg.training.seed)
    method = build_method(cfg.method_name, cfg.method_options)
    task = build_run_task(cfg)
    splits = task.load()
    _log(
        f"{task.name} data {task.description}: " + ", ".join(f"{k}={len(v)}" for k, v in splits.items())
        + f"; model {cfg.model.model_name_or_path}; method {method.name}; {threads} CPU thread(s)"
    )
    warning = slow_bf16_warning(cfg.training.bf16)
    if warning:
        _log(f"WARNING: {warning}")
    model, processor = load_model(
        cfg.model.model_name_or_path, kind=task.model_kind, seed=cfg.training.seed, check_config=task.check_config,
        model_config=cfg.model.model_config, tokenizer_name_or_path=cfg.model.tokenizer_name_or_path,
        **{**task.model_options(), **cfg.model.overrides()},
    )
    task.check_model(model)
    ctx = MethodContext(cfg.training, task, processor)
    encoded = method.prepare_data(task.encode(splits, processor, cfg.model.max_length, method.batch_columns), ctx)
    trainer = _trainer(cfg, model, processor, method, task, train_dataset=encoded.get("train"),
                       eval_dataset=encoded.get("validation"))
    out = Path(cfg.training.output_dir)
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    metrics: dict[str, Any] = {}
    if "train" in encoded:
        metrics.update(trainer.train(resume_from_checkpoint=resume).metrics)
    else:  # an evaluation-only task (e.g. a probe): the model is saved unchanged with its metrics
        _log(f"task {task.name} has no training split: evaluating only")
    trainer.save_model()
    trainer.save_state()  # trainer_state.json: the logged losses and learning rates of the whole run
    # Through the Trainer, which runs a task's own `evaluate` once (a task's evaluate calls trainer.evaluate for the
    # loss; called directly from here, that call ran the task's evaluate a second time: generation or retrieval twice).
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split in encoded:
            metrics.update(trainer.evaluate(encoded[split], metric_key_prefix=prefix))
    metrics.update(method.report())
    if trainer.is_world_process_zero():
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str))
        shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("eval_", "test_")) and "runtime" not in k
                 and "per_second" not in k and isinstance(v, (int, float))}
        _log(f"metrics: {json.dumps(shown)}")
        _log(f"model, config and metrics written to {out}")
    return metrics


def _run_config(run_dir: str | Path) -> ExperimentConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise RunError(f"{run_dir} is not a plmkit run folder (no {CONFIG_FILE})")
    return parse_experiment([str(path), "--output_dir", str(run_dir), "--report_to", "none"])


def load_run(
    run_dir: str | Path, method_overrides: dict[str, str] | None = None
) -> tuple[torch.nn.Module, Any, Method, ExperimentConfig]:
    """Rebuild a trained run: the saved weights, with the method's layers put back, in eval mode.

    `method_overrides` (option name -> flag string, as from `--method.KEY VALUE`) change method options for this
    use only, e.g. the sparsity a dynamically sparse model is exported at.
    """
    cfg = _run_config(run_dir)
    if method_overrides:
        options = {**cfg.method_options,
                   **parse_section_options("method", cfg.method_name, {}, method_overrides)}
        cfg = dataclasses.replace(cfg, method_options=options)
    method = build_method(cfg.method_name, cfg.method_options)
    task = build_run_task(cfg)
    model, processor = load_model(str(run_dir), kind=task.model_kind)
    model = prepare_model(method, model, MethodContext(cfg.training, task, processor))
    load_weights(model, Path(run_dir) / "model.safetensors")
    return model.eval(), processor, method, cfg


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a run's saved state dict strictly, except for tied weights `save_pretrained` leaves out (an LM head tied
    to the embeddings, BART's shared embeddings): a missing key is fine only when the same tensor was loaded under
    another name."""
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = {id(t) for name, t in model.state_dict(keep_vars=True).items() if name in state}
    named = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    untied = [k for k in missing if k not in named or id(named[k]) not in loaded]
    if untied or unexpected:
        raise RunError(f"{path} does not fit the rebuilt model: missing {untied[:5]}, unexpected {unexpected[:5]}")


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    data_overrides: list[str] | None = None,
    loaded: tuple[torch.nn.Module, Any, Method, ExperimentConfig] | None = None,
) -> dict[str, float]:
    """Evaluate a trained run on one split of its data (or of other data given as flags). `loaded` is the run as
    `load_run` returned it, changed by the caller (e.g. gated at another sparsity); by default it is loaded here."""
    model, processor, method, cfg = loaded if loaded is not None else load_run(run_dir)
    if data_overrides:
        cfg = parse_experiment([str(Path(run_dir) / CONFIG_FILE), "--output_dir", str(run_dir), *data_overrides])
    task = build_run_task(cfg)
    splits = task.load()
    if split not in splits:
        raise DataError(f"the run's data has no {split!r} split; it has {list(splits)}")
    encoded = method.prepare_data(task.encode(splits, processor, cfg.model.max_length, method.batch_columns),
                                  MethodContext(cfg.training, task, processor))
    cfg.training.report_to = []
    trainer = _trainer(cfg, model, processor, method, task, model_prepared=True)
    for printer in (PrinterCallback, ProgressCallback):  # stdout carries only the metrics
        trainer.remove_callback(printer)
    prefix = "eval" if split == "validation" else split
    return trainer.evaluate(encoded[split], metric_key_prefix=prefix)


def export_run(run_dir: str | Path, output_dir: str | Path, method_overrides: dict[str, str] | None = None) -> Path:
    """Apply the method's `export` and save a model that plain transformers loads (safetensors)."""
    model, processor, method, _ = load_run(run_dir, method_overrides)
    exported = method.export(model)
    out = Path(output_dir)
    exported.save_pretrained(out)
    processor.save_pretrained(out)
    return out
