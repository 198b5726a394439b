"""A LAMA-style cloze probe of factual knowledge, and the `cloze_probe` task that runs it.

`probe(model, tokenizer, facts)`: a fact is a query with one "[MASK]" placeholder and its gold answers (WordNet's
facts: `plmkit.knowledge_pretraining.wordnet`, e.g. "dog is a type of [MASK] ." -> canine). Facts are first reduced
to the answers that are one token of the tokenizer (`wordnet.single_token_facts`: a fact with none is skipped and
counted as `answer_not_single_token`). The placeholder becomes the tokenizer's mask token, each query is one forward
row (batches of `batch_size`; only the mask position reaches the masked-LM head), and the whole vocabulary except the
special tokens is ranked at the mask. P@k is the share of facts with a gold answer among the k best tokens (any of
its answers counts, as a fact may have several), reported overall, per relation, per split ("injected": stated in the
`wordnet-definitions` corpus; "control": not) and per split and relation, each with the binomial standard error
sqrt(p (1 - p) / n).

Majority baseline: per relation, the answer token that is gold for the most facts of that relation (among the
probed facts themselves, so an optimistic baseline); `baseline_p_at_1` is the P@1 of always predicting it. A model
that beats it uses the subject, not only the relation's answer distribution.

Task `cloze_probe` (evaluation only): a masked-LM model is scored on `--data wordnet-probe` or `--test_file
FACTS.jsonl` (fields `query`, `answers`, and optionally `relation`, `split`, `subject`). The task has no training
split, so `plmkit train` only evaluates:

    plmkit train --task cloze_probe --data wordnet-probe --model_name_or_path RUN_OR_MODEL --output_dir DIR

and saves the (unchanged) model with `metrics.json` holding `test_p_at_1`, `test_p_at_1/hypernym`,
`test_p_at_1/injected`, `test_p_at_1/injected/hypernym`, ... (`plmkit eval` on that folder repeats it); training
steps are refused (`compute_loss` raises). `plmkit knowledge probe` runs the probe without a run folder.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from torch import nn

from plmkit.core.data import read_jsonl
from plmkit.core.errors import DataError, TaskError
from plmkit.core.tasks import Task, TaskConfig
from plmkit.core.tasks.masked_lm import MaskedLMTask, masked_lm_forward

__all__ = [
    "MASK",
    "PROBE_DATA",
    "SPLITS",
    "ClozeProbeConfig",
    "ClozeProbeTask",
    "check_facts",
    "flatten_metrics",
    "load_probe_facts",
    "probe",
    "probe_metrics",
    "read_facts",
    "select_split",
]

MASK = "[MASK]"
PROBE_DATA = "wordnet-probe"
SPLITS = ("injected", "control")
UNSPECIFIED = "unspecified"
FIELDS = ("subject", "relation", "query", "answers", "split")


# ---------------------------------------------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------------------------------------------
def _check_fact(fact: Any, where: str) -> dict[str, Any]:
    """One fact with its fields checked and defaults filled in (relation and split "unspecified")."""
    if not isinstance(fact, dict):
        raise DataError(f"{where}: a fact must be a JSON object, got {type(fact).__name__}")
    missing = [k for k in ("query", "answers") if k not in fact]
    if missing:
        raise DataError(f"{where}: the fact has no {' or '.join(repr(k) for k in missing)} field (it has "
                        f"{sorted(fact)}); a fact needs a 'query' with one {MASK} and a list of 'answers'")
    query, answers = fact["query"], fact["answers"]
    if not isinstance(query, str) or query.count(MASK) != 1:
        count = query.count(MASK) if isinstance(query, str) else 0
        raise DataError(f"{where}: the query must hold exactly one {MASK} placeholder, it holds {count}: {query!r}")
    if isinstance(answers, str):
        answers = [answers]
    if (not isinstance(answers, list) or not answers
            or not all(isinstance(a, str) and a.strip() for a in answers)):
        raise DataError(f"{where}: 'answers' must be a non-empty list of non-empty strings, got {answers!r}")
    out = dict(fact)
    out.update(query=query, answers=[a.strip() for a in answers])
    for key in ("relation", "split"):
        out[key] = str(out.get(key) or UNSPECIFIED)
    out["subject"] = str(out.get("subject") or "")
    return out


def check_facts(facts: Iterable[Any], source: str = "facts") -> list[dict[str, Any]]:
    """Facts with their fields checked (`DataError` naming the fact's number otherwise)."""
    return [_check_fact(f, f"{source} fact {i}") for i, f in enumerate(facts, 1)]


def read_facts(path: str | Path) -> list[dict[str, Any]]:
    """The facts of a .jsonl file (one JSON object a line; blank lines skipped). A missing file, a line that is not
    JSON, lacks `query`/`answers`, or whose query does not hold exactly one [MASK] is a `DataError` naming the
    line."""
    return [_check_fact(record, f"{path}:{number}") for number, record in read_jsonl(path)]


def load_probe_facts(data: str | None = None, facts_file: str | Path | None = None) -> list[dict[str, Any]]:
    """The facts of `--data wordnet-probe` (built and cached on first use) or of a .jsonl file."""
    if data and facts_file:
        raise DataError("pass either the wordnet-probe data or a facts file, not both")
    if facts_file:
        return read_facts(facts_file)
    if data in (None, PROBE_DATA):
        from plmkit.knowledge_pretraining import wordnet

        return check_facts(wordnet.load_facts(), PROBE_DATA)
    raise DataError(f"unknown probe data {data!r}: the cloze probe reads --data {PROBE_DATA} or a facts .jsonl file "
                    f"(--test_file / --facts)")


def select_split(facts: Sequence[dict[str, Any]], split: str = "all") -> list[dict[str, Any]]:
    """The facts of one split ("injected", "control"), or all of them ("all")."""
    if split == "all":
        return list(facts)
    chosen = [f for f in facts if f.get("split") == split]
    if not chosen:
        present = sorted({str(f.get("split")) for f in facts})
        raise DataError(f"no facts in split {split!r}; the facts' splits are {present}")
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# The probe
# ---------------------------------------------------------------------------------------------------------------
def _se(p: float, n: int) -> float:
    return math.sqrt(p * (1.0 - p) / n) if n else float("nan")


def _group(records: Sequence[dict[str, Any]], k: Sequence[int]) -> dict[str, Any]:
    n = len(records)
    out: dict[str, Any] = {"n": n}
    for kk in k:
        p = sum(r["hits"][kk] for r in records) / n if n else float("nan")
        out[f"p_at_{kk}"], out[f"p_at_{kk}_se"] = p, _se(p, n)
    p = sum(r["baseline_hit"] for r in records) / n if n else float("nan")
    out["baseline_p_at_1"], out["baseline_p_at_1_se"] = p, _se(p, n)
    return out


def probe_metrics(records: Sequence[dict[str, Any]], k: Sequence[int] = (1, 10),
                  tokenizer: Any = None) -> dict[str, Any]:
    """Aggregate per-fact records (`relation`, `split`, `gold`: answer token ids, `hits`: {k: bool}) into P@k,
    standard errors and the majority baseline, overall and per relation, split and split/relation."""
    majority: dict[str, int] = {}
    for relation in sorted({r["relation"] for r in records}):
        counts = Counter(g for r in records if r["relation"] == relation for g in dict.fromkeys(r["gold"]))
        majority[relation] = counts.most_common(1)[0][0]
    for r in records:
        r["baseline_hit"] = majority[r["relation"]] in r["gold"]
    by: dict[str, dict[str, list[dict[str, Any]]]] = {"by_relation": {}, "by_split": {}, "by_split_relation": {}}
    for r in records:
        by["by_relation"].setdefault(r["relation"], []).append(r)
        by["by_split"].setdefault(r["split"], []).append(r)
        by["by_split_relation"].setdefault(f"{r['split']}/{r['relation']}", []).append(r)
    out: dict[str, Any] = {"overall": _group(records, k)}
    for name, groups in by.items():
        out[name] = {key: _group(groups[key], k) for key in sorted(groups)}
    for relation, answer in majority.items():
        token = tokenizer.convert_ids_to_tokens(answer) if tokenizer is not None else answer
        out["by_relation"][relation]["majority_answer"] = token
    return out


def probe(model: nn.Module, tokenizer: Any, facts: Sequence[dict[str, Any]], batch_size: int = 64,
          k: Sequence[int] = (1, 10), return_predictions: bool = False) -> dict[str, Any]:
    """P@k of `model` on `facts` (see the module docstring).

    Returns `overall`, `by_relation`, `by_split`, `by_split_relation` (each: `n`, `p_at_K`, `p_at_K_se`,
    `baseline_p_at_1`, `baseline_p_at_1_se`; `by_relation` also `majority_answer`), `k`, `facts` (given),
    `probed`, `skipped` ({reason: count}) and, with `return_predictions`, `predictions` (per probed fact: subject,
    relation, split, query, answers, top tokens, hit at the smallest k).
    """
    from plmkit.knowledge_pretraining import wordnet

    k = sorted({int(x) for x in k})
    if not k or k[0] < 1:
        raise TaskError(f"k must be positive integers, got {k}")
    if tokenizer.mask_token is None:
        raise TaskError(f"the cloze probe needs a tokenizer with a mask token; {type(tokenizer).__name__} has none")
    checked = check_facts(facts)
    kept, skipped = wordnet.single_token_facts(checked, tokenizer)
    result: dict[str, Any] = {"k": k, "facts": len(checked), "probed": len(kept), "skipped": dict(skipped)}
    if not kept:
        empty = probe_metrics([], k, tokenizer)
        return {**empty, **result, **({"predictions": []} if return_predictions else {})}
    special = torch.tensor(sorted({int(i) for i in tokenizer.all_special_ids}), dtype=torch.long)
    device = next(model.parameters()).device
    top = max(k)
    records: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(kept), batch_size):
                chunk = kept[start : start + batch_size]
                queries = [f["query"].replace(MASK, tokenizer.mask_token) for f in chunk]
                enc = tokenizer(queries, padding=True, return_tensors="pt", return_token_type_ids=False)
                is_mask = enc["input_ids"].eq(tokenizer.mask_token_id)
                bad = [q for q, m in zip(queries, is_mask.sum(1).tolist(), strict=True) if m != 1]
                if bad:
                    raise DataError(f"a query does not encode to exactly one mask token: {bad[0]!r}")
                labels = torch.where(is_mask, enc["input_ids"], torch.full_like(enc["input_ids"], -100))
                logits, _, _ = masked_lm_forward(model, {"input_ids": enc["input_ids"].to(device),
                                                         "attention_mask": enc["attention_mask"].to(device),
                                                         "labels": labels.to(device)})
                logits = logits.float().cpu()
                logits[:, special[special < logits.shape[1]]] = float("-inf")
                best = logits.topk(min(top, logits.shape[1]), dim=-1).indices
                for fact, row in zip(chunk, best.tolist(), strict=True):
                    gold = [int(i) for i in fact["answer_ids"]]
                    records.append({"relation": fact["relation"], "split": fact["split"], "gold": gold,
                                    "hits": {kk: any(g in row[:kk] for g in gold) for kk in k},
                                    "fact": fact, "top": row})
    finally:
        model.train(was_training)
    out = {**probe_metrics(records, k, tokenizer), **result}
    if return_predictions:
        out["predictions"] = [
            {"subject": r["fact"]["subject"], "relation": r["relation"], "split": r["split"],
             "query": r["fact"]["query"], "answers": r["fact"]["answers"],
             "top": tokenizer.convert_ids_to_tokens(r["top"]), f"hit_at_{k[0]}": r["hits"][k[0]]}
            for r in records
        ]
    return out


def flatten_metrics(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """`probe`'s result as flat metric names: `n`, every `p_at_K`, the standard error of the first and
    `baseline_p_at_1`, overall (`{prefix}_p_at_1`), per relation (`{prefix}_p_at_1/hypernym`), split
    (`{prefix}_p_at_1/injected`) and both (`{prefix}_p_at_1/injected/hypernym`); and `{prefix}_probed`,
    `{prefix}_facts`, `{prefix}_skipped/REASON`."""
    head = f"{prefix}_" if prefix else ""
    k = result["k"]
    wanted = ["n", *[f"p_at_{x}" for x in k], f"p_at_{k[0]}_se", "baseline_p_at_1"]
    out: dict[str, float] = {}
    groups = [("", result["overall"])]
    for name in ("by_relation", "by_split", "by_split_relation"):
        groups += [(f"/{key}", values) for key, values in result[name].items()]
    for suffix, values in groups:
        for metric in wanted:
            out[f"{head}{metric}{suffix}"] = values[metric]
    out[f"{head}probed"] = result["probed"]
    out[f"{head}facts"] = result["facts"]
    for reason, count in result["skipped"].items():
        out[f"{head}skipped/{reason}"] = count
    return out


# ---------------------------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ClozeProbeConfig(TaskConfig):
    """Evaluation only (`plmkit train` evaluates the model and trains nothing): P@k of a masked-LM model on cloze facts.

    Facts from --data wordnet-probe or --test_file FACTS.jsonl (--max_eval_samples keeps the first N, in file order);
    P@k per relation and split (injected/control), with the majority-answer baseline."""

    split: str = field(default="all", metadata={"help": "facts to probe: injected, control or all",
                                                "choices": ("all", *SPLITS)})
    k: list[int] = field(default_factory=lambda: [1, 10], metadata={"help": "the k of P@k (comma-separated)"})
    batch_size: int = field(default=0, metadata={"help": "queries per forward (0: --per_device_eval_batch_size)"})

    def validate(self) -> None:
        if self.split not in ("all", *SPLITS):
            raise TaskError(f"split must be all, injected or control, got {self.split!r}")
        if not self.k or any(int(x) < 1 for x in self.k):
            raise TaskError(f"k must be positive integers, got {self.k}")
        if self.batch_size < 0:
            raise TaskError(f"batch_size must be >= 0, got {self.batch_size}")


class _FactCollator:
    """Pads encoded queries (used only if a Trainer iterates the split; evaluation runs `probe` itself)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.tokenizer.pad([{"input_ids": f["input_ids"]} for f in features], return_tensors="pt")
        batch["example_id"] = torch.tensor([int(f["example_id"]) for f in features], dtype=torch.long)
        return dict(batch)


class ClozeProbeTask(Task):
    """The cloze probe as a task (see the module docstring)."""

    name = "cloze_probe"
    config_class = ClozeProbeConfig
    config: ClozeProbeConfig
    model_kind = "masked-lm"
    main_metric = "p_at_1"

    def load(self) -> DatasetDict:
        s = self.source
        if s.train_file or s.validation_file or s.glue_dir:
            raise DataError("task cloze_probe only evaluates: give the facts as --test_file FACTS.jsonl or --data "
                            f"{PROBE_DATA} (no --train_file/--validation_file/--glue_dir)")
        if s.few_shot_k is not None:
            raise DataError("--few_shot_k samples labelled classes; it does not apply to task cloze_probe")
        if not s.data and not s.test_file:
            raise DataError(f"no facts: pass --data {PROBE_DATA} or --test_file FACTS.jsonl")
        facts = select_split(load_probe_facts(s.data, s.test_file), self.config.split)
        rows = {key: [f.get(key) for f in facts] for key in FIELDS}
        test = Dataset.from_dict(rows)
        if s.max_eval_samples is not None:
            test = test.select(range(min(s.max_eval_samples, len(test))))
        return DatasetDict({"test": test})  # no training split: `plmkit train` only evaluates

    @property
    def description(self) -> str:
        return self.source.data or (Path(self.source.test_file).name if self.source.test_file else "facts")

    def check_config(self, config: Any, name: str) -> None:
        MaskedLMTask().check_config(config, name)

    def check_model(self, model: nn.Module) -> None:
        MaskedLMTask().check_model(model)

    def encode(self, splits: DatasetDict, processor: Any, max_length: int,
               keep_columns: tuple[str, ...] = ()) -> DatasetDict:
        missing = [c for c in keep_columns if c not in FIELDS]
        if missing:
            raise DataError(f"the cloze_probe splits have no column(s) {missing} (needed by the method)")
        if processor.mask_token is None:
            raise TaskError(f"task cloze_probe needs a tokenizer with a mask token; {type(processor).__name__} has none")
        out = DatasetDict()
        for split, ds in splits.items():
            queries = [q.replace(MASK, processor.mask_token) for q in ds["query"]]
            ids = processor(queries, truncation=True, max_length=max_length, return_attention_mask=False,
                            return_token_type_ids=False)["input_ids"]
            out[split] = ds.add_column("input_ids", ids).add_column("example_id", list(range(len(ds))))
        return out

    def collator(self, processor: Any, model: nn.Module | None = None) -> Callable[[list[dict[str, Any]]], Any]:
        return _FactCollator(processor)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        raise TaskError("task cloze_probe only evaluates a model and has no training loss (use `plmkit train "
                        "--task cloze_probe ...`, which only evaluates, or `plmkit knowledge probe --model MODEL`)")

    def evaluate(self, trainer: Any, dataset: Any, prefix: str) -> dict[str, float]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = trainer.processing_class
        facts = [{key: row[key] for key in FIELDS} for row in dataset]
        batch = self.config.batch_size or trainer.args.per_device_eval_batch_size
        result = probe(model, tokenizer, facts, batch_size=batch, k=self.config.k)
        metrics = flatten_metrics(result, prefix)
        trainer.log({key: value for key, value in metrics.items() if "/" not in key})
        return metrics
