"""UPT stage 1 (multi-task prompt training on dissimilar sources + KSMLM) and the `plmkit-upt` command.

The core's `plmkit train` trains on one task's encoded data and has no hook to replace it, so stage 1 is its own
command that reuses everything else of the core: the experiment config (same YAML keys and flags as
`plmkit train`, `method: {name: upt, sources: ..., okr: ...}`), `load_model`, the core `Trainer` with the `upt`
method (Eq. 3 task-balanced sampler, full-vocabulary loss, lambda * KSMLM). It writes a model folder that stage 2
loads with `plmkit train --model_name_or_path STAGE1_DIR --method upt ...`.

    plmkit-upt adapt-head --model minilm --out outputs/minilm-mlm          # a usable masked-LM head (mlm_head.py)
    plmkit-upt build-okr --model outputs/minilm-mlm --sources trec,sms-spam --out outputs/okr.json
    plmkit-upt stage1 packages/prompt_tuning/configs/upt_stage1_rt_polarity.yaml
    plmkit train packages/prompt_tuning/configs/upt_rt_polarity.yaml --model_name_or_path outputs/upt_stage1_rt_polarity
    plmkit-upt write-task amazon-rating-pairs --out data/amazon-rating-pairs   # the pair task as jsonl files
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml
from datasets import Dataset, DatasetDict, concatenate_datasets
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, set_seed

from plmkit.core.config import ExperimentConfig, parse_experiment
from plmkit.core.models import load_model
from plmkit.core.training import MethodError, Trainer, auto_num_threads, build_method, make_compute_metrics
from plmkit.prompt_tuning.config import UPTConfig
from plmkit.prompt_tuning.ksmlm import (
    OptionsKnowledgeRepository,
    embed_words,
    extract_adjectives,
    ksmlm_examples,
)
from plmkit.prompt_tuning.method import UPTMethod, load_masked_lm
from plmkit.prompt_tuning.mlm_head import adapt_head, masked_token_accuracy
from plmkit.prompt_tuning.model import PromptModel
from plmkit.prompt_tuning.pov import label_word_ids, pov_template
from plmkit.prompt_tuning.sources import SOURCES, load_source, write_task

__all__ = ["KSMLM_PROMPT", "build_stage1_data", "main", "stage1"]

KSMLM_PROMPT = "It is {mask} ."  # fixed during multi-task training (Sec. 3.3, P-generation)
STAGE1_CONFIG = "upt_stage1.yaml"


def _encode(tokenizer: PreTrainedTokenizerBase, columns: list[list[str]], max_length: int) -> dict[str, list]:
    """The core's tokenization (`[CLS] a [SEP] (b [SEP])`, the longest text cut first)."""
    return dict(tokenizer(*columns, truncation=True, max_length=max_length))


def build_stage1_data(
    cfg: UPTConfig, tokenizer: PreTrainedTokenizerBase, max_length: int, okr: OptionsKnowledgeRepository | None,
    max_train: int | None = None, max_eval: int | None = None, seed: int = 0,
) -> tuple[DatasetDict, list[str], list[list[str]], int]:
    """The multi-task training/validation sets with `task_ids` and `candidate_ids` columns, the POV templates and
    label words (index = task id; KSMLM last), and the KSMLM task index (-1 without KSMLM)."""
    names = [s.strip() for s in cfg.sources.split(",") if s.strip()]
    if len(names) != len(set(names)):
        raise MethodError(f"sources repeat a task: {names}")
    use_ksmlm = cfg.ksmlm_share > 0
    width = max([len(SOURCES[n].label_words) for n in names if n in SOURCES] + [2])
    rng = np.random.default_rng(seed)
    templates, words, parts, ksmlm_texts = [], [], {"train": [], "validation": []}, []
    for k, name in enumerate(names):
        task, spec = load_source(name), SOURCES[name]
        label_words = list(spec.label_words)
        templates.append(pov_template(label_words, cfg.prompt, spec.options, pair=len(task.text_columns) == 2))
        words.append(label_words)
        candidates = label_word_ids(label_words, tokenizer) + [-1] * (width - len(label_words))
        for split, limit in (("train", max_train), ("validation", max_eval)):
            ds = task.splits[split]
            ds = ds.select(rng.permutation(len(ds))[: limit or len(ds)])
            enc = _encode(tokenizer, [list(ds[c]) for c in task.text_columns], max_length)
            parts[split].append(Dataset.from_dict(
                {**enc, "labels": list(ds["label"]), "task_ids": [k] * len(ds), "candidate_ids": [candidates] * len(ds)}
            ))
            if split == "train":
                ksmlm_texts += list(ds[task.text_columns[0]])
    ksmlm_task = -1
    if use_ksmlm:
        if okr is None:
            raise MethodError("KSMLM needs an options knowledge repository (--method.okr)")
        ksmlm_task = len(names)
        templates.append(f"{{text_a}} {cfg.options.replace('{options}', '{text_b}')} {KSMLM_PROMPT}")
        words.append([])
        rows = {"text": [], "options": [], "labels": [], "candidate_ids": []}
        for ex in ksmlm_examples(ksmlm_texts, okr, tokenizer.mask_token, rng):
            try:
                ids = label_word_ids(ex["options"], tokenizer)
            except MethodError:
                continue  # the word and its distractor share a first sub-token: not a usable question
            rows["text"].append(ex["text"])
            rows["options"].append(" or ".join(ex["options"]))
            rows["labels"].append(ex["answer"])
            rows["candidate_ids"].append(ids + [-1] * (width - 2))
        if not rows["text"]:
            raise MethodError("no source sentence holds an OKR adjective: KSMLM has no examples")
        enc = _encode(tokenizer, [rows["text"], rows["options"]], max_length)
        parts["train"].append(Dataset.from_dict(
            {**enc, "labels": rows["labels"], "task_ids": [ksmlm_task] * len(rows["text"]), "candidate_ids": rows["candidate_ids"]}
        ))
    data = DatasetDict({split: concatenate_datasets(p) for split, p in parts.items()})
    return data, templates, words, ksmlm_task


def stage1(cfg: ExperimentConfig) -> dict[str, float]:
    """Run stage 1 as configured (module docstring); return and write its metrics."""
    if cfg.method_name != "upt":
        raise MethodError(f"stage 1 is UPT's: the config's method must be upt, got {cfg.method_name!r}")
    method = build_method("upt", cfg.method_options)
    assert isinstance(method, UPTMethod)
    if not method.config.sources:
        raise MethodError("stage 1 needs --method.sources, e.g. 'trec,sms-spam'")
    import torch

    torch.set_num_threads(cfg.run.num_threads or auto_num_threads())
    set_seed(cfg.training.seed)
    model, tokenizer = load_model(cfg.model.model_name_or_path, num_labels=2, seed=cfg.training.seed, **cfg.model.overrides())
    okr = OptionsKnowledgeRepository.load(method.config.okr) if method.config.ksmlm_share > 0 else None
    data, templates, words, ksmlm_task = build_stage1_data(
        method.config, tokenizer, cfg.model.max_length, okr, cfg.data.max_train_samples, cfg.data.max_eval_samples,
        cfg.training.seed,
    )
    method.stage1_tasks = (templates, words, ksmlm_task)
    trainer = Trainer(
        model, cfg.training, method=method, train_dataset=data["train"], eval_dataset=data["validation"],
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
        compute_metrics=make_compute_metrics(("accuracy",)),
    )
    out = Path(cfg.training.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / STAGE1_CONFIG).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    metrics = dict(trainer.train().metrics)
    trainer.save_model()
    metrics.update(trainer.evaluate(metric_key_prefix="eval"))
    metrics.update({"stage1_train_examples": len(data["train"]), "stage1_tasks": len(templates)})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def _texts(sources: list[str], limit: int | None) -> list[str]:
    texts: list[str] = []
    for name in sources:
        task = load_source(name)
        for column in task.text_columns:
            texts += list(task.splits["train"][column])[:limit]
    return list(dict.fromkeys(texts))


def _cmd_adapt_head(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.num_threads or auto_num_threads())
    backbone, tokenizer = load_model(args.model, num_labels=2, seed=args.seed)
    model = backbone if isinstance(backbone, PromptModel) else PromptModel.from_backbone(
        backbone, load_masked_lm(backbone), objective="upt", template="{text} {mask}", num_prompt_tokens=0)
    texts = _texts(args.sources.split(","), None)
    held_out = [t for name in args.sources.split(",") for t in list(load_source(name).splits["validation"]["text"])[:200]] \
        if "amazon-rating-pairs" not in args.sources else []
    before = masked_token_accuracy(model, tokenizer, held_out) if held_out else None
    losses = adapt_head(model, tokenizer, texts, args.steps, args.batch_size, args.learning_rate, seed=args.seed)
    after = masked_token_accuracy(model, tokenizer, held_out) if held_out else None
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    report = {"steps": args.steps, "first_loss": losses[0], "last_loss": losses[-1],
              "masked_token_accuracy_before": before, "masked_token_accuracy_after": after, "texts": len(texts)}
    (Path(args.out) / "head_adaptation.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


def _cmd_build_okr(args: argparse.Namespace) -> None:
    texts = _texts(args.sources.split(","), args.max_texts)
    words = extract_adjectives(texts, args.min_count)
    model, tokenizer = load_model(args.model, num_labels=2)
    encoder = model.encoder if isinstance(model, PromptModel) else model.base_model
    okr = OptionsKnowledgeRepository.build(words, embed_words(encoder, tokenizer, words), args.clusters, args.seed)
    okr.save(args.out)
    print(json.dumps({"adjectives": len(words), "clusters": args.clusters, "texts": len(texts), "out": args.out}))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "stage1":
        print(json.dumps(stage1(parse_experiment(argv[1:])), indent=2))
        return 0
    parser = argparse.ArgumentParser(prog="plmkit-upt", description="UPT: stage 1 and its offline assets")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("stage1", help="multi-task stage 1: plmkit-upt stage1 CONFIG.yaml [plmkit train flags]")
    head = sub.add_parser("adapt-head", help="train a masked-LM head (encoder frozen) on the sources' training text")
    head.add_argument("--model", default="minilm")
    head.add_argument("--sources", default="rt-polarity,amazon-polarity-snippets,tweets-polarity,trec,sms-spam")
    head.add_argument("--steps", type=int, default=300)
    head.add_argument("--batch_size", type=int, default=32)
    head.add_argument("--learning_rate", type=float, default=1e-3)
    head.add_argument("--seed", type=int, default=0)
    head.add_argument("--num_threads", type=int, default=0)
    head.add_argument("--out", required=True)
    okr = sub.add_parser("build-okr", help="options knowledge repository: adjectives (spaCy), PLM vectors, K-means")
    okr.add_argument("--model", default="minilm")
    okr.add_argument("--sources", required=True, help="comma-separated source tasks (their training text)")
    okr.add_argument("--min_count", type=int, default=5)
    okr.add_argument("--clusters", type=int, default=20)
    okr.add_argument("--max_texts", type=int, default=None, help="read at most this many texts per source")
    okr.add_argument("--seed", type=int, default=0)
    okr.add_argument("--out", required=True)
    task = sub.add_parser("write-task", help="write a source task (e.g. amazon-rating-pairs) as jsonl files")
    task.add_argument("name")
    task.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "adapt-head":
        _cmd_adapt_head(args)
    elif args.command == "build-okr":
        _cmd_build_okr(args)
    else:
        print(write_task(args.name, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
