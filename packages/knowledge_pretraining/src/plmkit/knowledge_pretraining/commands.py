"""`plmkit knowledge ...` (entry-point group `plmkit.commands`, name `knowledge`).

    plmkit knowledge probe --model PATH [--data wordnet-probe | --facts FILE.jsonl] [--split injected|control|all]
                           [--limit N] [--seed 0] [--k 1,10] [--batch_size 64] [--predictions] [--output FILE.json]
        P@1/P@10 of a masked-LM model on cloze facts, per relation and split, with the majority baseline
        (`plmkit.knowledge_pretraining.probe`)
    plmkit knowledge analyze --model PATH [--texts FILE | --data NAME] [--limit N] [--max_length 64]
                             [--batch_size 32] [--mask_stride 0] [--lexicon FILE] [--bf16] [--output FILE.json]
        the paper's two findings, K-B against K-F words: cloze error rate and attention received
        (`plmkit.knowledge_pretraining.analysis`)

PATH is a model folder (a `plmkit train` run folder included) or an alias such as `minilm` (`load_model(...,
kind="masked-lm")`; a masked-LM head the checkpoint lacks is initialised randomly, and the command says so). Both
commands print a readable summary; `--output` writes the full result as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from plmkit.core.errors import ConfigError, DataError

__all__ = ["analyze_command", "load_texts", "main", "probe_command"]

DEFAULT_TEXTS = "rt-polarity"


def _load(model: str) -> tuple[Any, Any, list[str]]:
    from plmkit.core.models import fresh_parameters, load_model

    loaded, tokenizer = load_model(model, kind="masked-lm")
    return loaded, tokenizer, sorted(fresh_parameters(loaded))


def _note_fresh(model: str, fresh: list[str]) -> None:
    if fresh:
        print(f"note: {model} has no trained weights for {len(fresh)} parameter(s) (e.g. {fresh[0]}); they were "
              f"initialised randomly, so predictions through them are near chance", file=sys.stderr)


def _write(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2, default=str, allow_nan=True) + "\n", encoding="utf-8")
        print(f"written to {out}")


def _k(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--k expects comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--k expects positive integers, got {text!r}")
    return values


def _sample(items: list[Any], limit: int | None, seed: int) -> list[Any]:
    """At most `limit` items: a seeded random sample, kept in their original order."""
    import numpy as np

    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ConfigError(f"--limit must be positive, got {limit}")
    chosen = sorted(np.random.default_rng(seed).permutation(len(items))[:limit].tolist())
    return [items[i] for i in chosen]


def _pct(x: float) -> str:
    return "   n/a" if isinstance(x, float) and math.isnan(x) else f"{100 * x:6.2f}"


def format_probe(result: dict[str, Any]) -> str:
    """A small table of `probe`'s result (percentages)."""
    k = result["k"]
    head = f"{'':28s} {'n':>7s} " + " ".join(f"{'P@' + str(x):>7s}" for x in k) + f" {'±se@1':>7s} {'major.':>7s}"
    lines = [f"{result['probed']} of {result['facts']} facts probed; skipped: {result['skipped']}", head]

    def row(name: str, g: dict[str, Any]) -> str:
        return (f"{name:28s} {g['n']:7d} " + " ".join(f"{_pct(g[f'p_at_{x}']):>7s}" for x in k)
                + f" {_pct(g[f'p_at_{k[0]}_se']):>7s} {_pct(g['baseline_p_at_1']):>7s}")

    lines.append(row("all", result["overall"]))
    for section in ("by_split", "by_relation", "by_split_relation"):
        for name, g in result[section].items():
            lines.append(row(f"  {name}", g))
    return "\n".join(lines)


def probe_command(args: argparse.Namespace) -> dict[str, Any]:
    from plmkit.knowledge_pretraining.probe import load_probe_facts, probe, select_split

    facts = load_probe_facts(None if args.facts else args.data, args.facts)
    facts = _sample(select_split(facts, args.split), args.limit, args.seed)
    model, tokenizer, fresh = _load(args.model)
    _note_fresh(args.model, fresh)
    started = time.perf_counter()
    result = probe(model, tokenizer, facts, batch_size=args.batch_size, k=_k(args.k),
                   return_predictions=args.predictions)
    seconds = round(time.perf_counter() - started, 3)
    print(format_probe(result))
    print(f"({seconds} s)")
    payload = {"model": args.model, "data": args.facts or args.data, "split": args.split, "limit": args.limit,
               "seed": args.seed, "fresh_parameters": fresh, "seconds": seconds, **result}
    _write(args.output, payload)
    return payload


def load_texts(texts: str | None = None, data: str | None = None, limit: int | None = None) -> list[str]:
    """Sentences to analyse: the lines of a .txt/.jsonl file, or the texts of a dataset the `masked_lm` task reads
    (a builtin such as rt-polarity, or a package corpus such as wordnet-definitions), training split first; at most
    `limit` (the first ones: builtin splits are already in random order)."""
    from plmkit.core.tasks import DataSource
    from plmkit.core.tasks.masked_lm import MaskedLMTask, read_corpus

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be positive, got {limit}")
    if texts and data:
        raise DataError("pass either --texts FILE or --data NAME, not both")
    if texts:
        rows = read_corpus(texts, split="texts")
    else:
        splits = MaskedLMTask(source=DataSource(data=data or DEFAULT_TEXTS)).load()
        rows = []
        for split in ("train", "validation", "test"):
            if split in splits and (limit is None or len(rows) < limit):
                rows += list(splits[split]["text"])
    return rows[:limit] if limit is not None else rows


def analyze_command(args: argparse.Namespace) -> dict[str, Any]:
    from plmkit.knowledge_pretraining.analysis import analyze, format_table

    texts = load_texts(args.texts, args.data, args.limit)
    lexicon = None
    if args.lexicon:
        path = Path(args.lexicon)
        if not path.is_file():
            raise DataError(f"lexicon file {path} does not exist")
        lexicon = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    model, tokenizer, fresh = _load(args.model)
    _note_fresh(args.model, fresh)
    result = analyze(model, tokenizer, texts, lexicon=lexicon, batch_size=args.batch_size,
                     max_length=args.max_length, mask_stride=args.mask_stride, autocast=args.bf16)
    print(format_table(result))
    print(f"({result['seconds']} s)")
    payload = {"model": args.model, "texts": args.texts or args.data or DEFAULT_TEXTS, "limit": args.limit,
               "lexicon": args.lexicon or "wordnet", "fresh_parameters": fresh, **result}
    _write(args.output, payload)
    return payload


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="plmkit knowledge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="P@k of a masked-LM model on cloze facts")
    p.add_argument("--model", required=True, help="model folder or alias (e.g. minilm)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", default="wordnet-probe", help="wordnet-probe (default)")
    source.add_argument("--facts", default=None, help="facts .jsonl (query with one [MASK], answers, relation, split)")
    p.add_argument("--split", default="all", choices=("all", "injected", "control"))
    p.add_argument("--limit", type=int, default=None, help="probe a seeded random sample of N facts")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    p.add_argument("--k", default="1,10", help="the k of P@k, comma-separated")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--predictions", action="store_true", help="add every fact's top tokens to the JSON")
    p.add_argument("--output", default=None, help="write the result as JSON")
    a = sub.add_parser("analyze", help="cloze errors and attention received, K-B against K-F words")
    a.add_argument("--model", required=True, help="model folder or alias (e.g. minilm)")
    texts = a.add_mutually_exclusive_group()
    texts.add_argument("--texts", default=None, help="a .txt (one sentence a line) or .jsonl (text field) file")
    texts.add_argument("--data", default=None, help=f"a dataset's texts (default {DEFAULT_TEXTS})")
    a.add_argument("--limit", type=int, default=500, help="analyse the first N texts (default 500)")
    a.add_argument("--max_length", type=int, default=64)
    a.add_argument("--batch_size", type=int, default=32)
    a.add_argument("--mask_stride", type=int, default=0,
                   help="0: one masked word per forward row; s>=2: every s-th word masked together (faster)")
    a.add_argument("--lexicon", default=None, help="lemma file, one a line (default: WordNet's lemmas)")
    a.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    a.add_argument("--output", default=None, help="write the result as JSON")
    args = parser.parse_args(argv)
    if args.command == "probe":
        probe_command(args)
    else:
        analyze_command(args)
    return 0
