"""UPT stage 1 as a task, `upt_stage1`: multi-task Prompt-Options-Verbalizer training on dissimilar source tasks
plus KSMLM (Wang et al., 2022, Sec. 3.2-3.3), trained by the core's `plmkit train` with the `upt` method.

    plmkit upt adapt-head --model minilm --out outputs/minilm-mlm          # a usable masked-LM head (mlm_head.py)
    plmkit upt build-okr --model outputs/minilm-mlm --sources trec,sms-spam --out outputs/okr.json
    plmkit train --task upt_stage1 --task.sources trec,sms-spam --task.okr outputs/okr.json --method upt \\
        --model_name_or_path outputs/minilm-mlm --output_dir outputs/upt_stage1
    plmkit train --method upt --model_name_or_path outputs/upt_stage1 --data rt-polarity --few_shot_k 16 ...

`load` reads every source's train and validation split (builtin data, `sources.load_source`; `--max_train_samples`
/ `--max_eval_samples` cap **each source**, a random subset drawn with `--task.seed`). `encode` tokenizes them as
the core does (`[CLS] a [SEP] (b [SEP])`) and gives every row its task id (`task_ids`: which POV template lays it
out) and its label words' token ids (`candidate_ids`, -1 padded to the widest source). With `--task.okr` the
training split also gets the KSMLM rows (built in `encode`, since they need the tokenizer's [MASK] and sub-tokens),
whose task id comes after the sources'. The `upt` method reads the sources' label words and options expressions
from `pov_tasks()`, lays out the templates, and draws Eq. 3 task-balanced batches with `--method.ksmlm_share`
KSMLM rows. The run folder is a model folder that stage 2 starts from (`--model_name_or_path`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, Features, Sequence, Value, concatenate_datasets
from torch import nn
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from plmkit.core.errors import DataError, MethodError, TaskError
from plmkit.core.tasks import Task, TaskConfig
from plmkit.core.training import make_compute_metrics
from plmkit.prompt_tuning.ksmlm import OptionsKnowledgeRepository, ksmlm_examples
from plmkit.prompt_tuning.pov import label_word_ids
from plmkit.prompt_tuning.sources import GROUPS, SOURCES, load_source

__all__ = ["KSMLM_PROMPT", "PovTask", "UPTStage1Config", "UPTStage1Task", "ksmlm_template"]

KSMLM_PROMPT = "It is {mask} ."  # fixed during multi-task training (Sec. 3.3, P-generation)
_RAW = Features({"text": Value("string"), "text_b": Value("string"), "label": Value("int64"),
                 "task_ids": Value("int64"), "candidate_ids": Sequence(Value("int64"))})


def ksmlm_template(options: str = "Is it {options} ?") -> str:
    """The KSMLM rows' template: the sentence with its adjective masked, the two options (`text_b`, "v or v'"),
    then the fixed prompt."""
    return f"{{text_a}} {options.replace('{options}', '{text_b}')} {KSMLM_PROMPT}"


@dataclass(frozen=True)
class PovTask:
    """One source task of stage 1: its label words (label order), options expression, and whether it is a pair
    task."""

    name: str
    label_words: tuple[str, ...]
    options: str
    pair: bool


@dataclass
class UPTStage1Config(TaskConfig):
    """UPT stage 1: multi-task POV data of source tasks plus KSMLM rows, trained with --method upt.

    The KSMLM rows come with --task.okr; the run folder is stage 2's --model_name_or_path."""

    sources: list[str] = field(
        default_factory=list,
        metadata={"help": f"source tasks (flag: trec,sms-spam), from {sorted(SOURCES)}; take them from groups other "
                          "than the target's (plmkit.prompt_tuning.sources.sources_for)"},
    )
    okr: str | None = field(
        default=None,
        metadata={"help": "options knowledge repository json (plmkit upt build-okr): adds the KSMLM rows to the "
                          "training data; unset = no KSMLM (then pass --method.ksmlm_share 0)"},
    )
    seed: int = field(
        default=42, metadata={"help": "draws each source's subset and the KSMLM words and distractors"}
    )

    def validate(self) -> None:
        if not isinstance(self.sources, list | tuple) or not all(isinstance(s, str) for s in self.sources):
            raise TaskError(f"sources is a list of source tasks (YAML: [trec, sms-spam]; flag: --task.sources "
                            f"trec,sms-spam), got {self.sources!r}")
        names = [s.strip() for s in self.sources if s.strip()]
        if not names:
            raise TaskError(f"task upt_stage1 needs --task.sources, e.g. trec,sms-spam; known: {sorted(SOURCES)}")
        if len(names) != len(set(names)):
            raise TaskError(f"sources repeat a task: {names}")
        unknown = [n for n in names if n not in SOURCES]
        if unknown:
            raise TaskError(f"unknown source task(s) {unknown}; known: {sorted(SOURCES)} (groups: {GROUPS})")


class UPTStage1Task(Task):
    """The multi-task data of UPT's stage 1 (module docstring)."""

    name = "upt_stage1"
    config_class = UPTStage1Config
    model_kind = "sequence-classification"
    main_metric = "accuracy"
    config: UPTStage1Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rng: np.random.Generator | None = None

    # -- what the method needs -------------------------------------------------------------------------------------
    def pov_tasks(self) -> list[PovTask]:
        """The source tasks, in task-id order."""
        return [PovTask(n, SOURCES[n].label_words, SOURCES[n].options, SOURCES[n].pair) for n in self.names]

    @property
    def names(self) -> list[str]:
        return [s.strip() for s in self.config.sources if s.strip()]

    @property
    def ksmlm(self) -> bool:
        """Whether the training data has KSMLM rows (an options knowledge repository was given)."""
        return bool(self.config.okr)

    @property
    def ksmlm_task(self) -> int:
        """The task id of the KSMLM rows (after the sources'), -1 without KSMLM."""
        return len(self.names) if self.ksmlm else -1

    @property
    def width(self) -> int:
        """The number of candidate label words per row (the widest source; KSMLM has two)."""
        return max([len(t.label_words) for t in self.pov_tasks()] + [2])

    @property
    def description(self) -> str:
        return "sources " + ",".join(self.names) + (" + KSMLM" if self.ksmlm else "")

    # -- data --------------------------------------------------------------------------------------------------------
    def load(self) -> DatasetDict:
        s = self.source
        if s.data or s.train_file or s.glue_dir:
            raise TaskError("task upt_stage1 reads its data from --task.sources; drop --data / --train_file / --glue_dir")
        if self.ksmlm and not Path(str(self.config.okr)).is_file():
            raise DataError(f"--task.okr {self.config.okr}: no such file (build it with `plmkit upt build-okr`)")
        rng = np.random.default_rng(self.config.seed)
        rows: dict[str, dict[str, list]] = {split: {k: [] for k in _RAW} for split in ("train", "validation")}
        for k, task in enumerate(self.pov_tasks()):
            data = load_source(task.name)
            columns = data.text_columns
            if (len(columns) == 2) != task.pair:
                raise TaskError(f"source {task.name}: its data has text columns {list(columns)}, but it is "
                                f"{'' if task.pair else 'not '}declared a pair task")
            for split, limit in (("train", s.max_train_samples), ("validation", s.max_eval_samples)):
                ds = data.splits[split]
                ds = ds.select(rng.permutation(len(ds))[: limit or len(ds)])
                r = rows[split]
                r["text"] += list(ds[columns[0]])
                r["text_b"] += list(ds[columns[1]]) if task.pair else [""] * len(ds)
                r["label"] += [int(v) for v in ds["label"]]
                r["task_ids"] += [k] * len(ds)
                r["candidate_ids"] += [[]] * len(ds)  # the label words' ids need the tokenizer: filled in `encode`
        self._rng = rng  # the KSMLM rows continue the same random stream
        return DatasetDict({split: Dataset.from_dict(r, features=_RAW) for split, r in rows.items()})

    def model_options(self) -> dict[str, Any]:
        return {"num_labels": self.width}

    def _ksmlm_rows(self, train: Dataset, processor: PreTrainedTokenizerBase) -> Dataset:
        """One KSMLM row per training sentence that holds an OKR adjective (`ksmlm.ksmlm_examples`)."""
        okr = OptionsKnowledgeRepository.load(str(self.config.okr))
        rng = self._rng if self._rng is not None else np.random.default_rng(self.config.seed)
        rows: dict[str, list] = {k: [] for k in _RAW}
        for ex in ksmlm_examples(list(train["text"]), okr, processor.mask_token, rng):
            try:
                ids = label_word_ids(ex["options"], processor)
            except MethodError:
                continue  # the word and its distractor share a first sub-token: not a usable question
            rows["text"].append(ex["text"])
            rows["text_b"].append(" or ".join(ex["options"]))
            rows["label"].append(ex["answer"])
            rows["task_ids"].append(self.ksmlm_task)
            rows["candidate_ids"].append(ids + [-1] * (self.width - 2))
        if not rows["text"]:
            raise DataError("no source sentence holds an OKR adjective: KSMLM has no examples")
        return Dataset.from_dict(rows, features=_RAW)

    def encode(self, splits: DatasetDict, processor: Any, max_length: int,
               keep_columns: tuple[str, ...] = ()) -> DatasetDict:
        tasks = self.pov_tasks()
        pair = [t.pair for t in tasks] + [True]  # KSMLM rows: the sentence, then its two options
        candidates = [label_word_ids(list(t.label_words), processor) + [-1] * (self.width - len(t.label_words))
                      for t in tasks]

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            n = len(batch["text"])
            out: dict[str, list] = {"candidate_ids": [c or candidates[t] for c, t in
                                                      zip(batch["candidate_ids"], batch["task_ids"], strict=True)]}
            for is_pair in (False, True):
                rows = [i for i in range(n) if pair[batch["task_ids"][i]] == is_pair]
                if not rows:
                    continue
                texts = [[batch["text"][i] for i in rows]] + ([[batch["text_b"][i] for i in rows]] if is_pair else [])
                for key, values in processor(*texts, truncation=True, max_length=max_length).items():
                    column = out.setdefault(key, [None] * n)
                    for i, v in zip(rows, values, strict=True):
                        column[i] = v
            return out

        encoded = DatasetDict()
        for split, ds in splits.items():
            missing = [c for c in keep_columns if c not in ds.column_names]
            if missing:
                raise DataError(f"task upt_stage1 has no column(s) {missing} (needed by the method)")
            if split == "train" and self.ksmlm:
                ds = concatenate_datasets([ds, self._ksmlm_rows(ds, processor)])
            out = ds.map(tokenize, batched=True, remove_columns=["text", "text_b"], desc=f"tokenize {split}")
            out = out.rename_column("label", "labels")
            encoded[split] = out.add_column("example_id", list(range(len(out))))
        return encoded

    def collator(self, processor: Any, model: nn.Module) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        return DataCollatorWithPadding(processor)

    def compute_metrics(self) -> Callable[..., dict[str, float]]:
        return make_compute_metrics(("accuracy",))
