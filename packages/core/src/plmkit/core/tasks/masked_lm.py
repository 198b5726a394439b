"""`masked_lm`: masked-language-model pre-training (or continued pre-training) on raw text.

Data (`load`): `--train_file` / `--validation_file` / `--test_file` as `.txt` (one example per line, blank lines
skipped) or `.jsonl` (the field named by the first of `--text_columns`, default `text`), or `--data NAME` with NAME a
builtin dataset of `plmkit.core.data` (its texts; labels ignored), `builtin-text` (every builtin dataset's texts
together), a text corpus an installed package registers (`plmkit.core.data.DATASETS` entries with `texts()`), or
several of these joined with "+" (e.g. `builtin-text+wordnet-definitions`: the splits concatenated, a line kept only
in the first split that has it). Without a validation file, a fixed 5% of the training lines is held out (a NumPy
permutation seeded with `plmkit.core.data.SPLIT_SEED`, the same in every run). `--max_train_samples` /
`--max_eval_samples` count lines.

Encoding (`packing`): `line` makes each line one example, truncated to `--max_length`; `blocks` tokenizes every line
with its special tokens, concatenates them and cuts blocks of `--max_length` tokens, as `group_texts` in
transformers' `examples/pytorch/language-modeling/run_mlm.py` (groups of 1,000 lines; unlike run_mlm the last,
shorter block of each group is kept rather than dropped, so small corpora and evaluation splits keep every token).

Masking: BERT's 80/10/10 corruption (`plmkit.core.losses.mask_tokens`) of `mlm_probability` of the tokens; special
tokens (those in `tokenizer.all_special_ids`, [UNK] included, as transformers' own collator) and padding are never
chosen; `whole_word` chooses whole words from the fast tokenizer's `word_ids`. Training batches are masked afresh in
every step (from torch's RNG, which `--seed` fixes); validation and test examples are masked once, when the splits
are encoded, each from a generator seeded with (`seed`, example_id), so their masks do not depend on batch size,
order or the run, and evaluation losses are comparable across runs.

Loss (`compute_loss`): the model's own forward, with a forward hook on its base model (`model.base_model`, e.g.
`bert`, `roberta`) that keeps only the hidden states of the masked positions, [B, T, H] -> [1, M, H]. The model's
own masked-LM head (BERT's `cls`, RoBERTa's and XLM-R's `lm_head`, ALBERT's `predictions`, DistilBERT's
`vocab_*` layers, ...) then maps those M rows to the vocabulary, and the cross-entropy is taken in float32. The
[B, T, V] logits are never built. Supported: any encoder-only masked-LM model whose head acts on each position
independently after its base model (tested against transformers' own loss: BERT, RoBERTa, XLM-R, ALBERT,
DistilBERT, ELECTRA, DeBERTa-v2, MPNet, ModernBERT); `check_model` runs a 4-token forward and raises `TaskError` for anything else
(encoder-decoder models such as BART, which AutoModelForMaskedLM maps to BartForConditionalGeneration, decoders, or
models without an output-embeddings head); `check_config` refuses encoder-decoder and decoder configs before the
model is built. The forward runs through the (DDP-wrapped) model, so gradients are synchronised as usual.

Evaluation: each batch returns per-example statistics [B, 3] (summed masked-token loss, masked tokens, correctly
predicted masked tokens); `compute_metrics` sums them over the split: `masked_loss` (token-weighted mean), `perplexity`
(exp of it), `masked_accuracy` and `masked_tokens`. `eval_loss` stays transformers' own figure (the mean of the
per-batch losses, weighted by batch size), so `eval_masked_loss` is the number to compare.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import AutoModelForMaskedLM, EvalPrediction
from transformers.utils import ModelOutput

from plmkit.core.data import BUILTIN, DATASETS, SPLIT_SEED, load_builtin, read_jsonl, read_lines
from plmkit.core.errors import DataError, TaskError
from plmkit.core.losses import mask_tokens
from plmkit.core.tasks import Task, TaskConfig

__all__ = [
    "BUILTIN_TEXT",
    "HOLDOUT_FRACTION",
    "MaskedLMCollator",
    "MaskedLMConfig",
    "MaskedLMStepOutput",
    "MaskedLMTask",
    "masked_lm_forward",
    "masked_lm_metrics",
    "read_corpus",
]

BUILTIN_TEXT = "builtin-text"
HOLDOUT_FRACTION = 0.05
GROUP_LINES = 1000  # lines per packing group, as run_mlm's batched map
TEXT_SUFFIXES = (".txt", ".text")
JSONL_SUFFIXES = (".jsonl",)
_EVAL_SPLITS = ("validation", "test")


@dataclass
class MaskedLMConfig(TaskConfig):
    """Masked-language-model (continued) pre-training on raw text: .txt/.jsonl files (--train_file, optional
    --validation_file, else a fixed 5% held out) or --data NAME (a builtin dataset's texts, or builtin-text)."""

    mlm_probability: float = field(default=0.15, metadata={"help": "share of tokens (or words) chosen for masking"})
    whole_word: bool = field(
        default=False, metadata={"help": "choose whole words (all pieces of a word together), from the tokenizer's word_ids"}
    )
    packing: str = field(
        default="line",
        metadata={"help": "line: each line one example (truncated to --max_length); blocks: lines concatenated "
                          "and cut into blocks of --max_length tokens", "choices": ("line", "blocks")},
    )
    seed: int = field(
        default=0, metadata={"help": "seed of the fixed validation/test masks (training masks change every step)"}
    )

    def validate(self) -> None:
        if not 0.0 < self.mlm_probability <= 1.0:
            raise TaskError(f"mlm_probability must be in (0, 1], got {self.mlm_probability}")


# ---------------------------------------------------------------------------------------------------------------
# Reading corpora
# ---------------------------------------------------------------------------------------------------------------
def read_corpus(path: str | Path, text_field: str = "text", split: str = "train") -> list[str]:
    """The examples of a corpus file: the non-blank lines of a .txt file (stripped), or the non-blank `text_field`
    values of a .jsonl file. A missing, empty or non-UTF-8 file is a `DataError` naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{split} file {path} does not exist")
    if path.is_dir():
        raise DataError(f"{split} file {path} is a folder; expected a .txt or .jsonl file")
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES + JSONL_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix!r} for masked_lm; use .txt (one example per line) "
                        f"or .jsonl (a {text_field!r} field)")
    if suffix in TEXT_SUFFIXES:
        return [s for s in (line.strip() for line in read_lines(path)) if s]
    texts: list[str] = []
    for number, record in read_jsonl(path):
        if text_field not in record:
            raise DataError(f"{path}:{number}: no {text_field!r} field (it has {sorted(record)}); choose the "
                            f"text field with --text_columns")
        value = record[text_field]
        if value is None:
            continue
        if not isinstance(value, str):
            raise DataError(f"{path}:{number}: {text_field!r} must be a string, got {type(value).__name__}")
        if value.strip():
            texts.append(value.strip())
    if not texts:
        raise DataError(f"{path} is empty: it has no non-blank {text_field!r} value")
    return texts


def _holdout(texts: list[str]) -> tuple[list[str], list[str]]:
    """(train, validation): a fixed 5% of the lines (at least one when there are two or more) held out, both in
    file order (so packed blocks keep neighbouring lines together)."""
    n_val = round(HOLDOUT_FRACTION * len(texts))
    if n_val == 0 and len(texts) >= 2:
        n_val = 1
    held = set(np.random.default_rng(SPLIT_SEED).permutation(len(texts))[:n_val].tolist())
    return ([t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held])


def _texts(rows: list[str]) -> Dataset:
    return Dataset.from_dict({"text": rows})


# ---------------------------------------------------------------------------------------------------------------
# The masked-only forward
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class MaskedLMStepOutput(ModelOutput):
    """One batch of `MaskedLMTask.compute_loss`: the mean masked-token loss, per-example statistics [B, 3] (summed
    loss, masked tokens, correct predictions; float32) and, while training, the logits of the masked positions
    [M, V] (row order: batch-major, as `labels != -100` lists them)."""

    loss: torch.Tensor | None = None
    stats: torch.Tensor | None = None
    masked_logits: torch.Tensor | None = None


def _unwrap(model: nn.Module) -> nn.Module:
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _check_head(core: nn.Module) -> nn.Module:
    """The base model of a masked-LM model, or TaskError saying why it cannot serve this task."""
    name = type(core).__name__
    config = getattr(core, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        raise TaskError(f"task masked_lm needs an encoder with a masked-LM head; {name} is an encoder-decoder "
                        f"(seq2seq) model: use --task seq2seq, or an encoder such as BERT or RoBERTa")
    if getattr(config, "is_decoder", False):
        raise TaskError(f"task masked_lm needs a bidirectional encoder; {name} is configured as a decoder")
    base = getattr(core, "base_model", core)
    head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None
    if base is core or not isinstance(head, nn.Module):
        raise TaskError(f"task masked_lm needs a model with a masked-LM head (load_model kind 'masked-lm'); "
                        f"{name} has none")
    return base


def masked_lm_forward(model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits [M, V], targets [M], example index [M]) of the positions where `inputs["labels"] != -100`, from the
    model's own forward with its base model's output cut down to those positions (see the module docstring)."""
    labels = inputs["labels"]
    masked = labels.ne(-100)
    base = _check_head(_unwrap(model))
    seen: dict[str, int] = {}

    def keep_masked(module: nn.Module, args: Any, output: Any) -> Any:
        hidden = output[0]
        if hidden.shape[:2] != masked.shape:
            raise TaskError(f"{type(module).__name__} returned hidden states of shape {tuple(hidden.shape)} for "
                            f"labels of shape {tuple(masked.shape)}")
        rows = hidden[masked].unsqueeze(0)
        seen["rows"] = rows.shape[1]
        if isinstance(output, ModelOutput):
            output[next(iter(output.keys()))] = rows
            return output
        return (rows, *output[1:])

    handle = base.register_forward_hook(keep_masked)
    try:
        out = model(**{k: v for k, v in inputs.items() if k != "labels"})
    finally:
        handle.remove()
    if "rows" not in seen:
        raise TaskError(f"{type(_unwrap(model)).__name__}: its base model was not called in the forward")
    logits = out["logits"] if isinstance(out, dict) else out[0]
    if logits.dim() != 3 or logits.shape[:2] != (1, seen["rows"]):
        raise TaskError(f"{type(_unwrap(model)).__name__}: its masked-LM head does not act on each position on its own "
                        f"(got logits of shape {tuple(logits.shape)} for {seen['rows']} positions); masked_lm supports "
                        f"heads applied position-wise after the base model")
    return logits[0], labels[masked], masked.nonzero(as_tuple=True)[0]


def _masked_loss(model: nn.Module, inputs: dict[str, Any]) -> MaskedLMStepOutput:
    logits, targets, rows = masked_lm_forward(model, inputs)
    losses = F.cross_entropy(logits.float(), targets, reduction="none")
    loss = losses.mean() if losses.numel() else logits.sum() * 0.0
    with torch.no_grad():
        per_row = torch.stack([losses.detach(), torch.ones_like(losses), logits.argmax(-1).eq(targets).float()], 1)
        stats = torch.zeros(inputs["labels"].shape[0], 3, dtype=torch.float32, device=logits.device)
        stats.index_add_(0, rows, per_row)
    return MaskedLMStepOutput(loss=loss, stats=stats, masked_logits=logits if model.training else None)


def masked_lm_metrics(pred: EvalPrediction) -> dict[str, float]:
    """Split-level metrics from the per-example statistics the evaluation loop gathered."""
    stats = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    total = np.asarray(stats, dtype=np.float64).reshape(-1, 3).sum(0)
    loss_sum, tokens, correct = (float(x) for x in total)
    if tokens == 0:
        return {"masked_loss": float("nan"), "perplexity": float("nan"), "masked_accuracy": float("nan"),
                "masked_tokens": 0}
    loss = loss_sum / tokens
    return {"masked_loss": loss, "perplexity": math.exp(min(loss, 700.0)), "masked_accuracy": correct / tokens,
            "masked_tokens": int(tokens)}


# ---------------------------------------------------------------------------------------------------------------
# Collation
# ---------------------------------------------------------------------------------------------------------------
class MaskedLMCollator:
    """Pads a batch to its longest example (`input_ids`, `attention_mask`, `example_id`) and masks it.

    Examples that already carry `labels` (validation/test, masked once when encoded) are only padded (labels with
    -100). Others are masked now (80/10/10 of `probability`), from torch's RNG or `generator`. With `whole_word`,
    word ids come from the examples' `word_ids` column (the task's `batch_columns`: the Trainer keeps it for the
    collator and never gives it to the model).
    """

    def __init__(self, tokenizer: Any, probability: float = 0.15, whole_word: bool = False,
                 vocab_size: int | None = None, generator: torch.Generator | None = None) -> None:
        if tokenizer.mask_token_id is None:
            raise TaskError(f"task masked_lm needs a tokenizer with a mask token; {type(tokenizer).__name__} has none")
        if tokenizer.pad_token_id is None:
            raise TaskError(f"task masked_lm needs a tokenizer with a padding token; {type(tokenizer).__name__} has none")
        self.mask_id, self.pad_id = tokenizer.mask_token_id, tokenizer.pad_token_id
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.vocab_size = vocab_size or len(tokenizer)
        self.probability, self.whole_word = probability, whole_word
        self.generator = generator

    def maskable(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return attention_mask.bool() & ~torch.isin(input_ids, self.special.to(input_ids.device))

    def _pad(self, rows: list[Any], value: int) -> torch.Tensor:
        longest = max(len(r) for r in rows)
        out = torch.full((len(rows), longest), value, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        return out

    @staticmethod
    def _words(features: list[dict[str, Any]]) -> list[Any]:
        if "word_ids" not in features[0]:
            raise TaskError("whole_word masking needs the examples' word_ids column (encoded by the masked_lm task)")
        return [f["word_ids"] for f in features]

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = self._pad([f["input_ids"] for f in features], self.pad_id)
        lengths = torch.tensor([len(f["input_ids"]) for f in features])
        attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
        batch: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        ids = [int(f["example_id"]) for f in features] if "example_id" in features[0] else None
        if ids is not None:
            batch["example_id"] = torch.tensor(ids, dtype=torch.long)
        labelled = ["labels" in f for f in features]
        if all(labelled):
            batch["labels"] = self._pad([f["labels"] for f in features], -100)
            return batch
        if any(labelled):
            raise TaskError("a batch mixes pre-masked (evaluation) and unmasked (training) examples")
        whole = None
        if self.whole_word:
            whole = self._pad(self._words(features), -1)
        batch["input_ids"], batch["labels"] = mask_tokens(
            input_ids, self.maskable(input_ids, attention_mask), self.mask_id, self.vocab_size, self.probability,
            generator=self.generator, whole_words=whole,
        )
        return batch


def eval_generator(seed: int, example_id: int, *keys: int) -> torch.Generator:
    """A torch generator fixed by (seed, example id, keys): the same masks for an example in every evaluation,
    whatever the batch it falls in. Tasks with more than one masked view pass a key per view."""
    state = np.random.SeedSequence([seed, example_id, *keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


# ---------------------------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------------------------
class MaskedLMTask(Task):
    name = "masked_lm"
    config_class = MaskedLMConfig
    model_kind = "masked-lm"
    main_metric = "masked_accuracy"
    batch_columns = ("word_ids",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: MaskedLMConfig
        self._description = ""

    # -- data -------------------------------------------------------------------------------------------------------
    def load(self) -> DatasetDict:
        s = self.source
        files = {"train": s.train_file, "validation": s.validation_file, "test": s.test_file}
        if s.few_shot_k is not None:
            raise DataError("--few_shot_k samples labelled classes; it does not apply to task masked_lm")
        if s.glue_dir:
            raise DataError("task masked_lm reads .txt or .jsonl files (--train_file), not --glue_dir")
        if s.data and any(files.values()):
            raise DataError("pass either --data (a builtin corpus) or files (--train_file ...), not both")
        if s.data:
            rows = self._builtin(s.data)
            self._description = s.data
        elif s.train_file:
            text_field = s.text_columns[0] if s.text_columns else "text"
            rows = {split: read_corpus(f, text_field, split) for split, f in files.items() if f}
            if "validation" not in rows:
                rows["train"], rows["validation"] = _holdout(rows["train"])
                if not rows["validation"]:
                    del rows["validation"]
            self._description = Path(s.train_file).name
        else:
            raise DataError("no data: pass --train_file FILE (.txt or .jsonl), or --data NAME (a builtin dataset's "
                            f"texts, or {BUILTIN_TEXT} for all of them; see `plmkit data list`)")
        return s.limit(DatasetDict({split: _texts(texts) for split, texts in rows.items()}))

    @staticmethod
    def _builtin(name: str) -> dict[str, list[str]]:
        """The splits of `--data NAME`: one corpus, or several joined with "+" (builtin-text expands to every builtin
        dataset), concatenated split by split in the order named. A line already in an earlier split (train, then
        validation, then test) is dropped from the later one, so no evaluation text is trained on."""
        names = [n for part in name.split("+") for n in (list(BUILTIN) if part == BUILTIN_TEXT else [part])]
        if len(set(names)) < len(names):
            raise DataError(f"--data {name!r} names a corpus twice ({BUILTIN_TEXT} already holds every builtin "
                            f"dataset)")
        rows: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
        for each in names:
            for split, texts in MaskedLMTask._corpus(each).items():
                rows.setdefault(split, []).extend(texts)
        if len(names) > 1:
            seen = set(rows["train"])
            for split in _EVAL_SPLITS:
                rows[split] = [t for t in rows[split] if t not in seen]
                seen.update(rows[split])
        return {k: v for k, v in rows.items() if v}

    @staticmethod
    def _corpus(name: str) -> dict[str, list[str]]:
        """The text splits of one corpus: a builtin dataset's texts, or a registered corpus's `texts()`."""
        if name in BUILTIN:
            splits = load_builtin(name).splits
            return {split: list(splits[split]["text"]) for split in splits}
        if name in DATASETS.entries():
            corpus = DATASETS.get(name)
            if not hasattr(corpus, "texts"):
                raise DataError(f"dataset {name!r} is not a text corpus (it has no texts()); task masked_lm "
                                f"cannot read it")
            return {split: list(rows) for split, rows in corpus.texts().items() if rows}
        raise DataError(f"unknown corpus {name!r}: --data takes a builtin dataset (its texts: "
                        f"{', '.join(BUILTIN)}), {BUILTIN_TEXT} (all of them), a text corpus of an installed "
                        f"package ({', '.join(DATASETS.names()) or 'none installed'}), or several joined with '+'")

    @property
    def description(self) -> str:
        return self._description or self.source.data or self.source.train_file or "files"

    def check_config(self, config: Any, name: str = "") -> None:
        """Refuse, before the model is built, configs that make no encoder-only masked-LM model."""
        name = name or getattr(config, "_name_or_path", "") or config.model_type
        if getattr(config, "is_encoder_decoder", False):
            raise TaskError(f"task masked_lm needs an encoder with a masked-LM head; {name} ({config.model_type}) is "
                            f"an encoder-decoder (seq2seq) model: use --task seq2seq, or an encoder such as BERT or "
                            f"RoBERTa")
        if type(config) not in AutoModelForMaskedLM._model_mapping:
            raise TaskError(f"task masked_lm needs an encoder with a masked-LM head (BERT, RoBERTa, XLM-R, ...); "
                            f"{name} ({config.model_type}) has no masked-LM model in transformers")
        if getattr(config, "is_decoder", False):
            raise TaskError(f"task masked_lm needs a bidirectional encoder; {name} is configured as a decoder")

    def check_model(self, model: nn.Module) -> None:
        core = _unwrap(model)
        _check_head(core)
        ids = torch.arange(4).remainder(max(1, getattr(core.config, "vocab_size", 4))).unsqueeze(0)
        device = next(core.parameters()).device
        inputs = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids, device=device),
                  "labels": torch.tensor([[-100, 1, 2, -100]], device=device)}
        was_training = core.training
        core.eval()
        try:
            with torch.no_grad():
                masked_lm_forward(core, inputs)
        except TaskError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure means the model cannot serve this task
            raise TaskError(f"task masked_lm cannot use {type(core).__name__}: {type(err).__name__}: {err}") from err
        finally:
            core.train(was_training)

    # -- encoding ---------------------------------------------------------------------------------------------------
    def encode(self, splits: DatasetDict, processor: Any, max_length: int,
               keep_columns: tuple[str, ...] = ()) -> DatasetDict:
        cfg = self.config
        if keep_columns:
            raise DataError(f"the masked_lm splits hold only text; they have no column(s) {list(keep_columns)} "
                            f"(needed by the method)")
        if cfg.whole_word and not getattr(processor, "is_fast", False):
            raise TaskError("whole_word masking needs a fast tokenizer (word_ids); "
                            f"{type(processor).__name__} is not one")
        blocks = cfg.packing == "blocks"

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            enc = processor(batch["text"], truncation=not blocks, max_length=None if blocks else max_length,
                            return_attention_mask=False, return_token_type_ids=False, verbose=False)
            out = {"input_ids": enc["input_ids"]}
            if cfg.whole_word:
                out["word_ids"] = [[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(batch["text"]))]
            if blocks:
                out = _group(out, max_length)
            return out

        encoded = DatasetDict()
        for split, ds in splits.items():
            out = ds.map(tokenize, batched=True, batch_size=GROUP_LINES, remove_columns=ds.column_names,
                         desc=f"tokenize {split}")
            out = out.add_column("example_id", list(range(len(out))))
            if split in _EVAL_SPLITS:
                out = out.map(_fixed_masks, batched=True, desc=f"mask {split}",
                              fn_kwargs={"collator": MaskedLMCollator(processor, cfg.mlm_probability, cfg.whole_word),
                                         "seed": cfg.seed},
                              remove_columns=[c for c in ("word_ids",) if c in out.column_names])
            encoded[split] = out
        return encoded

    def collator(self, processor: Any, model: nn.Module | None = None) -> MaskedLMCollator:
        return MaskedLMCollator(processor, self.config.mlm_probability, self.config.whole_word)

    # -- training and evaluation --------------------------------------------------------------------------------------
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, MaskedLMStepOutput]:
        out = _masked_loss(model, inputs)
        return out.loss, out

    def compute_metrics(self) -> Callable[..., dict[str, float]]:
        return masked_lm_metrics


def _fixed_masks(batch: dict[str, list], collator: MaskedLMCollator, seed: int) -> dict[str, list]:
    """Evaluation masks: each example masked alone, from a generator seeded with (seed, example_id)."""
    out: dict[str, list] = {"input_ids": [], "labels": []}
    for i, ids in enumerate(batch["input_ids"]):
        row = torch.tensor([ids], dtype=torch.long)
        words = torch.tensor([batch["word_ids"][i]], dtype=torch.long) if collator.whole_word else None
        corrupted, labels = mask_tokens(
            row, collator.maskable(row, torch.ones_like(row)), collator.mask_id, collator.vocab_size,
            collator.probability, generator=eval_generator(seed, int(batch["example_id"][i])), whole_words=words,
        )
        out["input_ids"].append(corrupted[0].tolist())
        out["labels"].append(labels[0].tolist())
    return out


def _group(tokenized: dict[str, list[list[int]]], block: int) -> dict[str, list[list[int]]]:
    """run_mlm's group_texts: concatenate the lines (with their special tokens) and cut blocks of `block` tokens;
    the last, shorter block is kept. Word ids are renumbered so that no two lines share a word."""
    ids = [t for row in tokenized["input_ids"] for t in row]
    out = {"input_ids": [ids[i : i + block] for i in range(0, len(ids), block)]}
    if "word_ids" in tokenized:
        words: list[int] = []
        offset = 0
        for row in tokenized["word_ids"]:
            words += [w + offset if w >= 0 else -1 for w in row]
            offset += max(row, default=-1) + 1
        out["word_ids"] = [_renumber(words[i : i + block]) for i in range(0, len(words), block)]
    return out


def _renumber(words: list[int]) -> list[int]:
    """Word ids of one block counted from 0 (ids only grow along a block, so the first is the smallest)."""
    first = next((w for w in words if w >= 0), 0)
    return [w - first if w >= 0 else -1 for w in words]
