"""`seq2seq`: translation and other text-to-text generation with an encoder-decoder model (BART, T5, Marian,
mBART, ...), trained on the cross-entropy of the target tokens and scored with sacreBLEU's corpus BLEU and chrF
on beam-search outputs.

Parallel data, one split per data flag (`--train_file`, `--validation_file`, `--test_file`), in one of three forms:

- `.tsv`: `source<TAB>target` per line, or a header line naming the columns (`--task.source_column`,
  `--task.target_column`, default `source` / `target`; other columns are ignored). Tabs separate columns and
  nothing else: quotes are text.
- `.jsonl`: one object per line with the two fields (`{"source": ..., "target": ...}`), or transformers'
  translation layout `{"translation": {"en": ..., "de": ...}}` with `--task.source_column en --task.target_column de`.
- two plain-text files, one sentence per line, aligned by line: with `--task.source_suffix .en
  --task.target_suffix .de`, each data flag is a prefix (`--train_file corpus/train` reads `corpus/train.en` and
  `corpus/train.de`, the fairseq `--trainpref` convention). `read_parallel(source, target)` reads one such pair and
  refuses files whose line counts differ.

A line that cannot be read (no tab, a missing field, bytes that are not UTF-8) and an empty file are `DataError`s
naming the file and the line.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    DataCollatorForSeq2Seq,
    PretrainedConfig,
)

from plmkit.core.data import read_jsonl, read_lines
from plmkit.core.errors import DataError, TaskError
from plmkit.core.tasks import Task, TaskConfig

__all__ = ["Seq2SeqCollator", "Seq2SeqConfig", "Seq2SeqTask", "read_parallel", "read_pairs", "score"]

SOURCE, TARGET = "source", "target"  # column names of the raw splits (whatever the files call them)
BLEU_TOKENIZERS = ("13a", "intl", "zh", "ja-mecab", "ko-mecab", "char", "none", "flores101", "flores200")


@dataclass
class Seq2SeqConfig(TaskConfig):
    """Text-to-text generation (translation, summarisation, ...) with an encoder-decoder model, scored with
    sacreBLEU (BLEU, chrF). Data: --train_file/--validation_file/--test_file as .tsv (source<TAB>target), .jsonl,
    or plain-text pairs with --task.source_suffix/--task.target_suffix."""

    source_column: str = field(default=SOURCE, metadata={"help": "source column of .tsv headers / .jsonl fields"})
    target_column: str = field(default=TARGET, metadata={"help": "target column of .tsv headers / .jsonl fields"})
    source_suffix: str = field(
        default="", metadata={"help": "plain-text pairs: each data flag is a prefix, PREFIX+source_suffix the sources"}
    )
    target_suffix: str = field(
        default="", metadata={"help": "plain-text pairs: PREFIX+target_suffix holds the targets, line by line"}
    )
    source_prefix: str = field(
        default="", metadata={"help": "text put before every source, e.g. 'translate English to German: ' for T5"}
    )
    max_target_length: int = field(default=128, metadata={"help": "truncate targets to this many tokens"})
    num_beams: int = field(default=4, metadata={"help": "beam size of the generation that BLEU and chrF score"})
    generation_max_length: int | None = field(
        default=None, metadata={"help": "longest generated output in tokens (default: max_target_length)"}
    )
    source_lang: str = field(
        default="", metadata={"help": "source language code for tokenizers that take one (mBART 'en_XX', NLLB)"}
    )
    target_lang: str = field(
        default="", metadata={"help": "target language code (tokenizer's tgt_lang, forced first generated token)"}
    )
    bleu_tokenize: str = field(
        default="13a", metadata={"help": "sacreBLEU tokenizer for BLEU ('zh', 'ja-mecab' for those targets)",
                                 "choices": BLEU_TOKENIZERS}
    )

    def validate(self) -> None:
        if bool(self.source_suffix) != bool(self.target_suffix):
            raise TaskError("source_suffix and target_suffix go together (plain-text pairs need both), got "
                            f"source_suffix={self.source_suffix!r}, target_suffix={self.target_suffix!r}")
        if self.source_suffix and self.source_suffix == self.target_suffix:
            raise TaskError(f"source_suffix and target_suffix must differ, both are {self.source_suffix!r}")
        if self.source_column == self.target_column:
            raise TaskError(f"source_column and target_column must differ, both are {self.source_column!r}")
        for name in ("max_target_length", "num_beams"):
            if getattr(self, name) < 1:
                raise TaskError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.generation_max_length is not None and self.generation_max_length < 1:
            raise TaskError(f"generation_max_length must be >= 1, got {self.generation_max_length}")


# ---------------------------------------------------------------------------------------------------------------
# Reading parallel data
# ---------------------------------------------------------------------------------------------------------------
def read_parallel(source_path: str | Path, target_path: str | Path) -> Dataset:
    """Two plain-text files aligned by line (line i of the target translates line i of the source) as a Dataset
    with columns `source` and `target`. Files whose line counts differ are refused: one missing or extra line
    shifts every later pair."""
    sources, targets = read_lines(source_path), read_lines(target_path)
    if len(sources) != len(targets):
        raise DataError(f"{source_path} has {len(sources)} lines, {target_path} has {len(targets)} lines; "
                        "parallel files must be aligned line by line")
    return Dataset.from_dict({SOURCE: sources, TARGET: targets})


def _read_tsv(path: Path, source_column: str, target_column: str) -> dict[str, list[str]]:
    numbered = [(i, line) for i, line in enumerate(read_lines(path), 1) if line.strip()]
    first = numbered[0][1].split("\t")
    defaults = (source_column, target_column) == (SOURCE, TARGET)
    if source_column in first and target_column in first:
        columns = first
        numbered = numbered[1:]
        if not numbered:
            raise DataError(f"{path} has a header line but no rows")
    elif defaults:
        columns = None  # no header: every line is source<TAB>target
    else:
        missing = [c for c in (source_column, target_column) if c not in first]
        raise DataError(f"{path}: the header line has no column(s) {missing}; its columns are {first}")
    rows: dict[str, list[str]] = {SOURCE: [], TARGET: []}
    for number, line in numbered:
        fields = line.split("\t")
        if columns is None:
            if len(fields) != 2:
                found = "no tab" if len(fields) == 1 else f"{len(fields)} tab-separated columns"
                raise DataError(f"{path}:{number}: expected source<TAB>target, found {found}")
            source, target = fields
        else:
            if len(fields) != len(columns):
                raise DataError(f"{path}:{number}: {len(fields)} tab-separated columns, but the header has "
                                f"{len(columns)} ({columns})")
            source, target = fields[columns.index(source_column)], fields[columns.index(target_column)]
        rows[SOURCE].append(source)
        rows[TARGET].append(target)
    return rows


def _read_jsonl(path: Path, source_column: str, target_column: str) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {SOURCE: [], TARGET: []}
    for number, row in read_jsonl(path):
        if source_column not in row and isinstance(row.get("translation"), dict):
            row = row["translation"]  # transformers' translation layout: {"translation": {"en": ..., "de": ...}}
        for column in (source_column, target_column):
            if not isinstance(row.get(column), str):
                found = f"its keys are {sorted(row)}" if column not in row else f"it is {type(row[column]).__name__}"
                raise DataError(f"{path}:{number}: no text field {column!r} ({found})")
        rows[SOURCE].append(row[source_column])
        rows[TARGET].append(row[target_column])
    return rows


def read_pairs(path: str | Path, source_column: str = SOURCE, target_column: str = TARGET) -> Dataset:
    """A .tsv or .jsonl parallel file as a Dataset with columns `source` and `target` (see the module docstring)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".tsv", ".jsonl"):
        raise DataError(f"{path}: task seq2seq reads .tsv (source<TAB>target) or .jsonl files, or plain-text pairs "
                        "given as a prefix with --task.source_suffix/--task.target_suffix")
    if not path.exists():
        raise DataError(f"{path} does not exist")
    reader = _read_tsv if suffix == ".tsv" else _read_jsonl
    return Dataset.from_dict(reader(path, source_column, target_column))


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------
def score(hypotheses: list[str], references: list[str], prefix: str = "eval",
          bleu_tokenize: str = "13a") -> dict[str, float]:
    """sacreBLEU corpus BLEU and chrF of detokenized `hypotheses` against one reference each."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    return {
        f"{prefix}_bleu": float(BLEU(tokenize=bleu_tokenize).corpus_score(hypotheses, [references]).score),
        f"{prefix}_chrf": float(CHRF().corpus_score(hypotheses, [references]).score),
    }


# ---------------------------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------------------------
class Seq2SeqCollator:
    """`DataCollatorForSeq2Seq` (inputs padded by the tokenizer, labels with -100, `decoder_input_ids` from the
    model) that leaves text fields (the raw `target` kept for scoring) out of the batch."""

    def __init__(self, tokenizer: Any, model: nn.Module | None = None) -> None:
        self.inner = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return self.inner([{k: v for k, v in f.items() if not isinstance(v, str)} for f in features])


def _describe(config: PretrainedConfig) -> str:
    """What kind of model `config` makes, for the error of a model that is not an encoder-decoder."""
    kind = type(config)
    if kind in AutoModelForMaskedLM._model_mapping:
        what = "an encoder"
    elif kind in AutoModelForCausalLM._model_mapping:
        what = "a decoder-only model"
    else:
        what = "not an encoder-decoder model"
    detail = ", ".join(getattr(config, "architectures", None) or []) or config.model_type
    return f"{what} ({detail})"


class Seq2SeqTask(Task):
    name = "seq2seq"
    config_class = Seq2SeqConfig
    model_kind = "seq2seq"
    main_metric = "bleu"
    config: Seq2SeqConfig

    # -- data -------------------------------------------------------------------------------------------------------
    def load(self) -> DatasetDict:
        s, c = self.source, self.config
        if s.data or s.glue_dir:
            raise DataError("task seq2seq reads parallel files (--train_file, --validation_file, --test_file); "
                            f"{'--data' if s.data else '--glue_dir'} is for classification datasets")
        if s.few_shot_k is not None:
            raise DataError("--few_shot_k samples K examples per class; task seq2seq has no classes")
        files = {"train": s.train_file, "validation": s.validation_file, "test": s.test_file}
        files = {split: f for split, f in files.items() if f}
        if "train" not in files:
            raise DataError("no data: pass --train_file (a .tsv or .jsonl parallel file, or a prefix with "
                            "--task.source_suffix/--task.target_suffix)")
        splits = DatasetDict()
        for split, f in files.items():
            if c.source_suffix:
                splits[split] = read_parallel(f + c.source_suffix, f + c.target_suffix)
            else:
                splits[split] = read_pairs(f, c.source_column, c.target_column)
        return s.limit(splits)

    @property
    def description(self) -> str:
        f, c = self.source.train_file, self.config
        if f and c.source_suffix:
            return f"{f}{c.source_suffix} + {f}{c.target_suffix}"
        return f or "files"

    # -- model ------------------------------------------------------------------------------------------------------
    def check_config(self, config: PretrainedConfig, name: str = "") -> None:
        """Raise `TaskError` when `config` does not make an encoder-decoder model with a generation head (before
        the model is built, so the user sees this rather than the Auto class's list of every model type)."""
        if getattr(config, "is_encoder_decoder", False) and type(config) in AutoModelForSeq2SeqLM._model_mapping:
            return
        name = name or getattr(config, "_name_or_path", "") or config.model_type
        raise TaskError(f"task seq2seq needs an encoder-decoder model (BART, T5, Marian, mBART, ...); {name} is "
                        f"{_describe(config)}")

    def check_model(self, model: nn.Module) -> None:
        config = model.config
        if not getattr(config, "is_encoder_decoder", False) or not callable(getattr(model, "generate", None)):
            if not getattr(config, "architectures", None):
                config = copy.copy(config)
                config.architectures = [type(model).__name__]
            self.check_config(config)

    # -- encoding ---------------------------------------------------------------------------------------------------
    def _set_languages(self, tokenizer: Any) -> None:
        """Give the tokenizer the language codes it needs (mBART, NLLB, M2M100: `src_lang` / `tgt_lang`)."""
        for option, attribute in (("source_lang", "src_lang"), ("target_lang", "tgt_lang")):
            code = getattr(self.config, option)
            if not code:
                continue
            if not hasattr(tokenizer, attribute):
                raise TaskError(f"{option} {code!r}: the tokenizer ({type(tokenizer).__name__}) takes no language "
                                "codes; leave source_lang/target_lang empty for this model")
            try:
                setattr(tokenizer, attribute, code)
            except (KeyError, ValueError) as err:
                raise TaskError(f"{option} {code!r} is not a language code of {type(tokenizer).__name__}") from err

    def _forced_bos_token_id(self, tokenizer: Any) -> int | None:
        """The target language's token, which multilingual models (mBART-50, NLLB, M2M100) must generate first."""
        code = self.config.target_lang
        if not code:
            return None
        token_id = tokenizer.get_lang_id(code) if hasattr(tokenizer, "get_lang_id") else \
            tokenizer.convert_tokens_to_ids(code)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise TaskError(f"target_lang {code!r} is not a token of {type(tokenizer).__name__}")
        return int(token_id)

    def encode(self, splits: DatasetDict, processor: Any, max_length: int,
               keep_columns: tuple[str, ...] = ()) -> DatasetDict:
        """Sources (with `source_prefix`) truncated to `max_length` tokens and targets as `labels` truncated to
        `max_target_length`, unpadded; the raw `target` text stays for scoring (the collator drops it)."""
        self._set_languages(processor)
        prefix, max_target_length = self.config.source_prefix, self.config.max_target_length

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            inputs = processor([prefix + s for s in batch[SOURCE]], max_length=max_length, truncation=True)
            labels = processor(text_target=batch[TARGET], max_length=max_target_length, truncation=True)
            inputs["labels"] = labels["input_ids"]
            return inputs

        keep = {TARGET, *keep_columns}
        encoded = DatasetDict()
        for split, ds in splits.items():
            missing = [c for c in keep_columns if c not in ds.column_names]
            if missing:
                raise DataError(f"the {split} split has no column(s) {missing} (needed by the method); its columns "
                                f"are {ds.column_names}")
            drop = [c for c in ds.column_names if c not in keep]
            out = ds.map(tokenize, batched=True, remove_columns=drop, desc=f"tokenize {split}")
            encoded[split] = out.add_column("example_id", list(range(len(out))))
        return encoded

    def collator(self, processor: Any, model: nn.Module) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        return Seq2SeqCollator(processor, model)

    # -- generation and evaluation ----------------------------------------------------------------------------------
    def generation_config(self, model: nn.Module, tokenizer: Any) -> Any:
        """The model's generation config with this task's beam size and length limit (and forced target language)."""
        config = copy.deepcopy(model.generation_config)
        config.num_beams = self.config.num_beams
        config.max_length = self.config.generation_max_length or self.config.max_target_length
        config.max_new_tokens = None  # max_length is the limit (a checkpoint's max_new_tokens would override it)
        forced = self._forced_bos_token_id(tokenizer)
        if forced is not None:
            config.forced_bos_token_id = forced
        return config

    @torch.no_grad()
    def generate(self, model: nn.Module, tokenizer: Any, dataset: Dataset, batch_size: int = 8,
                 autocast: Callable[[], Any] | None = None) -> list[str]:
        """Decoded outputs for every row of `dataset` (encoded by `encode`), in row order. Rows are generated in
        batches of similar length (less padding for the beams), in eval mode on the model's device."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        config = self.generation_config(model, tokenizer)
        columns = [c for c in ("input_ids", "attention_mask") if c in dataset.column_names]
        inputs = dataset.select_columns(columns)
        lengths = [len(ids) for ids in inputs["input_ids"]]
        order = sorted(range(len(inputs)), key=lengths.__getitem__)
        outputs: list[str] = [""] * len(inputs)
        try:
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                chunk = inputs[rows]
                features = [{c: chunk[c][j] for c in columns} for j in range(len(rows))]
                batch = tokenizer.pad(features, return_tensors="pt")
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast() if autocast is not None else torch.autocast(device.type, enabled=False):
                    generated = model.generate(**batch, generation_config=config)
                for i, text in zip(rows, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
                    outputs[i] = text.strip()
        finally:
            model.train(was_training)
        return outputs

    def references(self, dataset: Dataset, tokenizer: Any) -> list[str]:
        """The raw target texts of an encoded split (decoded labels if the text column is gone)."""
        if TARGET in dataset.column_names:
            return list(dataset[TARGET])
        pad = tokenizer.pad_token_id
        labels = [[t if t != -100 else pad for t in row] for row in dataset["labels"]]
        return [t.strip() for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]

    def evaluate(self, trainer: Any, dataset: Any, prefix: str) -> dict[str, float]:
        """`{prefix}_loss` (teacher-forced, from the evaluation loop), then `{prefix}_bleu` and `{prefix}_chrf`
        of beam search (`num_beams`, `generation_max_length`) against the raw targets."""
        metrics = dict(trainer.evaluate(dataset, metric_key_prefix=prefix))
        tokenizer = trainer.processing_class
        model = trainer.accelerator.unwrap_model(trainer.model)
        hypotheses = self.generate(model, tokenizer, dataset, trainer.args.per_device_eval_batch_size,
                                   trainer.autocast_smart_context_manager)
        scores = score(hypotheses, self.references(dataset, tokenizer), prefix, self.config.bleu_tokenize)
        trainer.log(dict(scores))
        metrics.update(scores)
        return metrics
