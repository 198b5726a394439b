"""`plmkit upt ...`: UPT's offline assets (entry-point group `plmkit.commands`, name `upt`).

    plmkit upt adapt-head --model minilm --out outputs/minilm-mlm          # a usable masked-LM head (mlm_head.py)
    plmkit upt build-okr --model outputs/minilm-mlm --sources trec,sms-spam --out outputs/okr.json
    plmkit upt write-task amazon-rating-pairs --out data/amazon-rating-pairs   # the pair task as jsonl files

Stage 1 itself is a task of `plmkit train` (`--task upt_stage1`, see `stage1.py`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from plmkit.core.models import load_model
from plmkit.core.training import MethodError, auto_num_threads
from plmkit.prompt_tuning.ksmlm import OptionsKnowledgeRepository, embed_words, extract_adjectives
from plmkit.prompt_tuning.method import load_masked_lm
from plmkit.prompt_tuning.mlm_head import adapt_head, masked_token_accuracy
from plmkit.prompt_tuning.model import PromptModel
from plmkit.prompt_tuning.sources import SOURCES, load_source, write_task

__all__ = ["main"]

ALL_SOURCES = "rt-polarity,amazon-polarity-snippets,tweets-polarity,trec,sms-spam"


def _names(value: str) -> list[str]:
    """A comma-separated list of source tasks."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in SOURCES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected source tasks from {sorted(SOURCES)}, got {value!r}")
    return names


def _texts(sources: list[str], limit: int | None) -> list[str]:
    texts: list[str] = []
    for name in sources:
        task = load_source(name)
        for column in task.text_columns:
            texts += list(task.splits["train"][column])[:limit]
    return list(dict.fromkeys(texts))


def _adapt_head(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.num_threads or auto_num_threads())
    backbone, tokenizer = load_model(args.model, num_labels=2, seed=args.seed)
    model = backbone if isinstance(backbone, PromptModel) else PromptModel.from_backbone(
        backbone, load_masked_lm(backbone), objective="upt", template="{text} {mask}", num_prompt_tokens=0)
    texts = _texts(args.sources, None)
    single = [name for name in args.sources if not SOURCES[name].pair]  # held-out text: single-sentence sources
    held_out = [t for name in single for t in list(load_source(name).splits["validation"]["text"])[:200]]
    before = masked_token_accuracy(model, tokenizer, held_out) if held_out else None
    losses = adapt_head(model, tokenizer, texts, args.steps, args.batch_size, args.learning_rate, seed=args.seed)
    after = masked_token_accuracy(model, tokenizer, held_out) if held_out else None
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    report = {"steps": args.steps, "first_loss": losses[0], "last_loss": losses[-1],
              "masked_token_accuracy_before": before, "masked_token_accuracy_after": after, "texts": len(texts)}
    (Path(args.out) / "head_adaptation.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


def _build_okr(args: argparse.Namespace) -> None:
    texts = _texts(args.sources, args.max_texts)
    words = extract_adjectives(texts, args.min_count)
    if len(words) < 2:
        raise MethodError(f"only {len(words)} adjective(s) occur >= {args.min_count} times; lower --min_count")
    model, tokenizer = load_model(args.model, num_labels=2)
    encoder = model.encoder if isinstance(model, PromptModel) else model.base_model
    okr = OptionsKnowledgeRepository.build(words, embed_words(encoder, tokenizer, words), args.clusters, args.seed)
    okr.save(args.out)
    print(json.dumps({"adjectives": len(words), "clusters": args.clusters, "texts": len(texts), "out": args.out}))


def main(argv: list[str]) -> int:
    """`plmkit upt COMMAND ...` (module docstring); returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="plmkit upt",
        description="UPT's offline assets; stage 1 runs as `plmkit train --task upt_stage1 --task.sources ... "
                    "--method upt`",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    head = sub.add_parser("adapt-head", help="train a masked-LM head (encoder frozen) on the sources' training text")
    head.add_argument("--model", default="minilm")
    head.add_argument("--sources", type=_names, default=_names(ALL_SOURCES), help="comma-separated source tasks")
    head.add_argument("--steps", type=int, default=300)
    head.add_argument("--batch_size", type=int, default=32)
    head.add_argument("--learning_rate", type=float, default=1e-3)
    head.add_argument("--seed", type=int, default=0)
    head.add_argument("--num_threads", type=int, default=0)
    head.add_argument("--out", required=True)
    okr = sub.add_parser("build-okr", help="options knowledge repository: adjectives (spaCy), PLM vectors, K-means")
    okr.add_argument("--model", default="minilm")
    okr.add_argument("--sources", type=_names, required=True, help="comma-separated source tasks (their training text)")
    okr.add_argument("--min_count", type=int, default=5)
    okr.add_argument("--clusters", type=int, default=20)
    okr.add_argument("--max_texts", type=int, default=None, help="read at most this many texts per source")
    okr.add_argument("--seed", type=int, default=0)
    okr.add_argument("--out", required=True)
    task = sub.add_parser("write-task", help="write a source task (e.g. amazon-rating-pairs) as jsonl files")
    task.add_argument("name", choices=sorted(SOURCES))
    task.add_argument("--out", required=True)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse has already printed
        return int(stop.code or 0)
    if args.command == "adapt-head":
        _adapt_head(args)
    elif args.command == "build-okr":
        _build_okr(args)
    else:
        print(write_task(args.name, args.out))
    return 0
