"""UPT's source tasks on the builtin real data, in dissimilar groups, and a real sentence-pair task.

Groups (a target's sources come from the *other* groups, Wang et al. 2022, Sec. 4.1):
- sentiment: rt-polarity, amazon-polarity-snippets, tweets-polarity, amazon-rating-pairs
- question type: trec
- spam: sms-spam

`amazon-rating-pairs` is a sentence-pair task built from real human judgements: Hutto & Gilbert's Amazon review
snippets each carry the mean of ~20 human ratings in [-4, 4] (the builtin `rating` column). A pair (a, b) of
snippets from the same split whose mean ratings differ by at least `RATING_GAP` is labelled `yes` if a is rated
more positive than b, else `no` (a comparison task, as in paraphrase/NLI pair tasks the two sentences must be read
together). Pairs are drawn with a fixed seed, `PAIRS_PER_SNIPPET` per snippet of the split, so the task has the
same size as its source; train/validation/test pairs come from the builtin train/validation/test snippets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from plmkit.core.data import TaskData, load_builtin
from plmkit.core.training import MethodError

__all__ = ["GROUPS", "PAIR_TASKS", "SOURCES", "SourceTask", "load_source", "rating_pairs", "sources_for", "write_task"]

RATING_GAP = 1.0
PAIRS_PER_SNIPPET = 1
PAIR_SEED = 7


@dataclass(frozen=True)
class SourceTask:
    """A source task: its group, its POV label words (in label order), options expression, and whether its
    examples are sentence pairs (text columns `text_a`, `text_b`)."""

    group: str
    label_words: tuple[str, ...]
    options: str = "Is it {options} ?"
    pair: bool = False


SOURCES: dict[str, SourceTask] = {
    "rt-polarity": SourceTask("sentiment", ("terrible", "great")),
    "amazon-polarity-snippets": SourceTask("sentiment", ("terrible", "great")),
    "tweets-polarity": SourceTask("sentiment", ("terrible", "great")),
    "amazon-rating-pairs": SourceTask("sentiment", ("no", "yes"), "Is the first more positive , {options} ?", pair=True),
    "trec": SourceTask("question-type", ("abbreviation", "description", "entity", "human", "location", "number")),
    "sms-spam": SourceTask("spam", ("normal", "spam")),
}
GROUPS: dict[str, list[str]] = {}
for _name, _task in SOURCES.items():
    GROUPS.setdefault(_task.group, []).append(_name)
PAIR_TASKS = tuple(name for name, task in SOURCES.items() if task.pair)


def sources_for(target: str) -> list[str]:
    """Every source task outside `target`'s group (the paper's dissimilar-source protocol)."""
    if target not in SOURCES:
        raise MethodError(f"unknown task {target!r}; known: {sorted(SOURCES)}")
    return [name for name, task in SOURCES.items() if task.group != SOURCES[target].group]


def rating_pairs(snippets: Dataset, seed: int = PAIR_SEED) -> Dataset:
    """Pairs of rated snippets whose ratings differ by >= RATING_GAP; label 1 (`yes`) if the first is rated higher."""
    rng = np.random.default_rng(seed)
    texts, ratings = list(snippets["text"]), np.asarray(snippets["rating"])
    rows: dict[str, list] = {"text_a": [], "text_b": [], "label": []}
    for i in rng.permutation(len(texts)).repeat(PAIRS_PER_SNIPPET):
        far = np.flatnonzero(np.abs(ratings - ratings[i]) >= RATING_GAP)
        if len(far) == 0:
            continue
        j = int(rng.choice(far))
        rows["text_a"].append(texts[i])
        rows["text_b"].append(texts[j])
        rows["label"].append(int(ratings[i] > ratings[j]))
    features = Features({"text_a": Value("string"), "text_b": Value("string"), "label": ClassLabel(names=["no", "yes"])})
    return Dataset.from_dict(rows, features=features)


def load_source(name: str) -> TaskData:
    """A source task's TaskData (builtin, or the pair task built from its builtin snippets)."""
    if name not in SOURCES:
        raise MethodError(f"unknown source task {name!r}; known: {sorted(SOURCES)} (groups: {GROUPS})")
    if name == "amazon-rating-pairs":
        base = load_builtin("amazon-polarity-snippets")
        splits = DatasetDict({split: rating_pairs(ds) for split, ds in base.splits.items()})
        return TaskData(name, splits, ("text_a", "text_b"), "label", ("no", "yes"))
    return load_builtin(name)


def write_task(name: str, out_dir: str | Path) -> Path:
    """Write a source task as jsonl files (train/validation/test), for `plmkit train --train_file ...`."""
    task = load_source(name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, ds in task.splits.items():
        names = ds.features["label"].names
        rows = {column: list(ds[column]) for column in task.text_columns}
        rows["label"] = [names[i] for i in ds["label"]]  # label names, so `load_files` keeps them
        Dataset.from_dict(rows).to_json(out / f"{split}.jsonl")
    return out
