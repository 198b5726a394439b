"""A run, end to end: data -> model -> method -> Trainer -> metrics.json, and reloading, evaluating, exporting it.

A run folder (`--output_dir`) holds:
- `plmkit_config.yaml`: the resolved experiment config (re-runnable with `plmkit train`),
- the trained model as safetensors with its config and tokenizer (the method's layers included, e.g. PST factors),
- `metrics.json`: train metrics and `eval_*` (validation) / `test_*` (test) metrics, HF naming,
- `runs/`: tensorboard logs, and `checkpoint-*` folders if saving was on.
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
from transformers import DataCollatorWithPadding, PrinterCallback, ProgressCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from plmkit.core.errors import RunError, RunExistsError
from plmkit.core.config import ExperimentConfig, parse_experiment, parse_method_options
from plmkit.core.data import DataError, TaskData, encode, few_shot_split, load_builtin, load_files
from plmkit.core.models import load_model
from plmkit.core.training import Method, Trainer, auto_num_threads, build_method, make_compute_metrics

__all__ = ["RunExistsError", "evaluate_run", "export_run", "load_run", "load_task", "train"]

CONFIG_FILE = "plmkit_config.yaml"
METRICS_FILE = "metrics.json"


def load_task(cfg: ExperimentConfig) -> TaskData:
    d = cfg.data
    if d.data and (d.train_file or d.glue_dir):
        raise DataError("pass either --data (a builtin dataset) or files (--train_file / --glue_dir), not both")
    if d.data:
        task = load_builtin(d.data)
    elif d.train_file or d.glue_dir:
        task = load_files(d.train_file, d.validation_file, d.test_file, d.text_columns, d.label_column, d.glue_dir)
    else:
        raise DataError("no data: pass --data NAME (see `plmkit data list`) or --train_file FILE")
    if d.few_shot_k is not None:
        task = few_shot_split(task, d.few_shot_k, d.few_shot_seed)
    splits = task.splits
    for split, limit in (("train", d.max_train_samples), ("validation", d.max_eval_samples), ("test", d.max_eval_samples)):
        if limit is not None and split in splits:
            splits[split] = splits[split].select(range(min(limit, len(splits[split]))))
    return task


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


def train(cfg: ExperimentConfig) -> dict[str, float]:
    """Run an experiment; return (and write to metrics.json) its metrics."""
    resume = _check_output_dir(cfg)
    threads = cfg.run.num_threads or auto_num_threads()
    torch.set_num_threads(threads)
    set_seed(cfg.training.seed)
    method = build_method(cfg.method_name, cfg.method_options)
    task = load_task(cfg)
    _log(
        f"data {task.name}: " + ", ".join(f"{k}={len(v)}" for k, v in task.splits.items())
        + f"; model {cfg.model.model_name_or_path}; method {method.name}; {threads} CPU thread(s)"
    )
    model, tokenizer = load_model(
        cfg.model.model_name_or_path,
        num_labels=task.num_labels,
        seed=cfg.training.seed,
        id2label=dict(enumerate(task.label_names)) or None,
        label2id={n: i for i, n in enumerate(task.label_names)} or None,
        problem_type=task.problem_type,
        **cfg.model.overrides(),
    )
    encoded = encode(task, tokenizer, cfg.model.max_length)
    trainer = Trainer(
        model,
        cfg.training,
        method=method,
        train_dataset=encoded["train"],
        eval_dataset=encoded.get("validation"),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=make_compute_metrics(task.metrics, task.problem_type == "regression"),
    )
    out = Path(cfg.training.output_dir)
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    result = trainer.train(resume_from_checkpoint=resume)
    metrics: dict[str, float] = dict(result.metrics)
    trainer.save_model()
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split in encoded:
            metrics.update(trainer.evaluate(encoded[split], metric_key_prefix=prefix))
    if trainer.is_world_process_zero():
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
        shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("eval_", "test_")) and "runtime" not in k
                 and "per_second" not in k}
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
        options = {**cfg.method_options, **parse_method_options(cfg.method_name, {}, method_overrides)}
        cfg = dataclasses.replace(cfg, method_options=options)
    method = build_method(cfg.method_name, cfg.method_options)
    model, tokenizer = load_model(str(run_dir))
    model = method.prepare_model(model)
    weights = Path(run_dir) / "model.safetensors"
    model.load_state_dict(load_file(str(weights)), strict=True)
    return model.eval(), tokenizer, method, cfg


def evaluate_run(run_dir: str | Path, split: str = "test", data_overrides: list[str] | None = None) -> dict[str, float]:
    """Evaluate a trained run on one split of its data (or of other data given as flags)."""
    model, tokenizer, method, cfg = load_run(run_dir)
    if data_overrides:
        cfg = parse_experiment([str(Path(run_dir) / CONFIG_FILE), "--output_dir", str(run_dir), *data_overrides])
    task = load_task(cfg)
    if split not in task.splits:
        raise DataError(f"the run's data has no {split!r} split; it has {list(task.splits)}")
    encoded = encode(task, tokenizer, cfg.model.max_length)
    cfg.training.report_to = []
    trainer = Trainer(
        model,
        cfg.training,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=make_compute_metrics(task.metrics, task.problem_type == "regression"),
    )
    for printer in (PrinterCallback, ProgressCallback):  # stdout carries only the metrics
        trainer.remove_callback(printer)
    prefix = "eval" if split == "validation" else split
    return trainer.evaluate(encoded[split], metric_key_prefix=prefix)


def export_run(run_dir: str | Path, output_dir: str | Path, method_overrides: dict[str, str] | None = None) -> Path:
    """Apply the method's `export` and save a model that plain transformers loads (safetensors)."""
    model, tokenizer, method, _ = load_run(run_dir, method_overrides)
    exported = method.export(model)
    out = Path(output_dir)
    exported.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
