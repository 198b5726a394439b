"""The paper's two findings, measured on any masked-LM model (Wang et al., arXiv 2204.07994, Section 3).

Finding 1: a pre-trained LM mis-predicts knowledge-bearing (K-B) words more often than knowledge-free (K-F) words in
a cloze test. Finding 2: K-B words receive less self-attention than K-F words.

K-B / K-F labels (`label_words`). The paper labels tokens by hand; those annotations are not public, so this module
uses a documented proxy, applied to the words of a sentence as the tokenizer splits them (`lexicon.words_of`):

- K-F: a function word (`lexicon.FUNCTION_WORDS`: determiners, pronouns, prepositions, conjunctions, auxiliaries, ...);
- K-B: a content word (not a function word) inside a span of words that is a WordNet lemma (`wordnet.lemma_set()`,
  or any lexicon passed in). Spans are found by greedy longest match from left to right over the lower-cased words
  joined with single spaces ("new york", "ice cream"), the last word of a span also tried in its base forms
  (WordNet's suffix rules: "movies" -> "movie", "loved" -> "love"); optionally also the words of named-entity spans
  from an `ner` callable (no NER model is needed or bundled);
- unlabelled (excluded): punctuation, words with a digit, one-letter words (WordNet lists letters and symbols as
  lemmas), and content words in no lemma span (names, misspellings, rare inflections).

Finding 1 (`cloze_errors`): every labelled word is masked (all of its sub-word pieces replaced by the mask token) and
predicted from the rest of the sentence; the word counts as correct when the argmax of every piece is the original
piece. With `mask_stride=0` each word is masked in a view of its own (one forward row per word: exactly the
one-word-at-a-time cloze test); with `mask_stride=s >= 2` the words of a sentence are split into `s` views by word index
modulo `s`, and a view masks its labelled words together (never two adjacent words; about `s` times fewer rows, at the
price of less context). Reported per class: error rate, mean cross-entropy of a word's pieces, pieces per word and the
error rate of one-piece words (K-B words are rarer and split more often, a confound worth seeing), and the paired
difference K-B - K-F of the per-sentence error rates, with its standard error over sentences that have both classes.

Finding 2 (`attention_received`): with attention weights a_{l,h}(i -> j) (layer l, head h, query i, key j), the kept
tokens K of a sentence are those that are neither special ([CLS], [SEP], padding) nor punctuation. Each row i in K is
renormalised over the kept columns, a~(i -> j) = a(i -> j) / sum_{j' in K} a(i -> j') (so the mass parked on [CLS],
[SEP] and punctuation, which is large and varies between sentences, drops out), and a token's score is

    received(t) = |K| * mean_{l, h} mean_{i in K} a~_{l,h}(i -> t)        (t in K; self-attention included)

so the scores of a sentence average to 1.0, and 1.0 means "its uniform share of the attention". A word's score is the
mean of its pieces' scores; classes are compared by their mean score and by the paired per-sentence difference.

`analyze` runs both on a list of texts and returns one dict; `format_table` prints it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from plmkit.core.errors import TaskError
from plmkit.core.models import eager_attention
from plmkit.core.tasks.masked_lm import masked_lm_forward
from plmkit.knowledge_pretraining.lexicon import is_function_word, is_punctuation, words_of

__all__ = [
    "CLASSES",
    "Lexicon",
    "Sentence",
    "analyze",
    "attention_received",
    "attention_scores",
    "base_forms",
    "cloze_errors",
    "encode_sentences",
    "format_table",
    "label_words",
]

KB, KF = "kb", "kf"
CLASSES = (KB, KF)
MAX_SPAN_WORDS = 8  # longest lemma span tried (WordNet's longest lemmas have about this many words)
NerFn = Callable[[Sequence[str]], Iterable[tuple[int, int]]]

# WordNet's detachment rules ("morphy"): suffix -> replacement, tried in this order for every part of speech.
_SUFFIX_RULES = (
    ("ies", "y"), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
    ("es", "e"), ("es", ""), ("s", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", ""),
    ("er", ""), ("est", ""), ("er", "e"), ("est", "e"),
)


# ---------------------------------------------------------------------------------------------------------------
# K-B / K-F labels
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lexicon:
    """A set of lemmas (lower case, words joined by single spaces) and the number of words of its longest one."""

    lemmas: frozenset[str]
    max_words: int

    @classmethod
    def of(cls, lemmas: Lexicon | Collection[str]) -> Lexicon:
        if isinstance(lemmas, Lexicon):
            return lemmas
        normal = frozenset(" ".join(str(x).lower().replace("_", " ").split()) for x in lemmas)
        normal = normal - {""}
        longest = max((x.count(" ") + 1 for x in normal), default=1)
        return cls(normal, min(longest, MAX_SPAN_WORDS))

    def __contains__(self, text: object) -> bool:
        return text in self.lemmas

    def __len__(self) -> int:
        return len(self.lemmas)


@functools.lru_cache(maxsize=1 << 16)
def base_forms(word: str) -> tuple[str, ...]:
    """`word` and the forms WordNet's suffix rules give it ("studies" -> "study", "boxes" -> "box"), in that order;
    candidates shorter than two letters are left out."""
    out = [word]
    for suffix, replacement in _SUFFIX_RULES:
        if word.endswith(suffix) and len(word) > len(suffix):
            form = word[: -len(suffix)] + replacement
            if len(form) >= 2 and form not in out:
                out.append(form)
    return tuple(out)


def _default_lexicon() -> Lexicon:
    from plmkit.knowledge_pretraining import wordnet

    return Lexicon.of(wordnet.lemma_set())


def _lemma_spans(lower: Sequence[str], lexicon: Lexicon) -> list[tuple[int, int]]:
    """(start, end) word spans that are lemmas: greedy longest match from the left, the last word in its base forms."""
    spans = []
    i = 0
    while i < len(lower):
        found = 0
        for j in range(min(len(lower), i + lexicon.max_words), i, -1):
            head = " ".join(lower[i : j - 1])
            if any((f"{head} {form}" if head else form) in lexicon for form in base_forms(lower[j - 1])):
                found = j
                break
        if found:
            spans.append((i, found))
            i = found
        else:
            i += 1
    return spans


def _excluded(word: str) -> bool:
    return not word or is_punctuation(word) or any(ch.isdigit() for ch in word)


def label_words(words: Sequence[str], lexicon: Lexicon | Collection[str] | None = None,
                ner: NerFn | None = None) -> list[str | None]:
    """The K-B/K-F label of every word: "kb", "kf" or None (excluded); see the module docstring for the rules.

    Args:
        words: the words of one sentence, in order (e.g. the texts from `lexicon.words_of`).
        lexicon: WordNet lemmas (default `wordnet.lemma_set()`) or any collection of lower-case lemmas; a `Lexicon`
            is reused as it is (build it once with `Lexicon.of` when labelling many sentences).
        ner: optional callable mapping the words to (start, end) spans of named entities; their content words (and
            numbers) are K-B as well.
    """
    lex = _default_lexicon() if lexicon is None else Lexicon.of(lexicon)
    lower = [w.lower() for w in words]
    in_lemma = [False] * len(words)
    for start, end in _lemma_spans(lower, lex):
        for k in range(start, end):
            in_lemma[k] = True
    in_entity = [False] * len(words)
    for start, end in (ner(list(words)) if ner is not None else ()):
        for k in range(max(0, start), min(len(words), end)):
            in_entity[k] = True
    labels: list[str | None] = []
    for k, word in enumerate(lower):
        if not word or is_punctuation(word):
            labels.append(None)
        elif is_function_word(word):
            labels.append(KF)
        elif in_entity[k]:
            labels.append(KB)
        elif _excluded(word) or len(word) < 2 or not in_lemma[k]:
            labels.append(None)
        else:
            labels.append(KB)
    return labels


# ---------------------------------------------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Sentence:
    """One encoded text: token ids, its words (text, token positions) and their labels."""

    ids: list[int]
    words: list[tuple[str, list[int]]]
    labels: list[str | None]

    def labelled(self) -> list[int]:
        return [k for k, label in enumerate(self.labels) if label is not None]


def encode_sentences(tokenizer: Any, texts: Sequence[str], lexicon: Lexicon | Collection[str] | None = None,
                     max_length: int = 64, ner: NerFn | None = None) -> list[Sentence]:
    """Tokenize `texts` (truncated to `max_length` tokens) and label their words. When a text is truncated its last
    word is left unlabelled (its pieces may have been cut)."""
    lex = _default_lexicon() if lexicon is None else Lexicon.of(lexicon)
    texts = list(texts)
    if not texts:
        return []
    plain = {"return_attention_mask": False, "return_token_type_ids": False, "verbose": False}
    cut = tokenizer(texts, truncation=True, max_length=max_length, **plain)["input_ids"]
    full_lengths = [len(x) for x in tokenizer(texts, **plain)["input_ids"]]
    out = []
    for ids, full in zip(cut, full_lengths, strict=True):
        words = words_of(tokenizer, ids)
        labels = label_words([w for w, _ in words], lex, ner)
        if full > len(ids) and labels:
            labels[-1] = None
        out.append(Sentence(list(ids), words, labels))
    return out


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    longest = max(len(r) for r in rows)
    out = torch.full((len(rows), longest), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
    return out


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else 0


def _autocast(model: torch.nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    device = next(model.parameters()).device
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _paired(per_sentence: list[tuple[float, float]]) -> dict[str, float]:
    """Mean of the per-sentence differences (first - second) and its standard error over sentences."""
    diffs = np.array([a - b for a, b in per_sentence], dtype=np.float64)
    n = len(diffs)
    mean = float(diffs.mean()) if n else float("nan")
    se = float(diffs.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "se": se, "sentences": n}


# ---------------------------------------------------------------------------------------------------------------
# Finding 1: cloze errors
# ---------------------------------------------------------------------------------------------------------------
def _views(sentence: Sentence, stride: int) -> list[list[int]]:
    """Word indices masked together in each view of one sentence."""
    labelled = sentence.labelled()
    if stride <= 1:
        return [[k] for k in labelled]
    groups: dict[int, list[int]] = {}
    for k in labelled:
        groups.setdefault(k % stride, []).append(k)
    return [groups[r] for r in sorted(groups)]


def cloze_errors(model: torch.nn.Module, tokenizer: Any, sentences: Sequence[Sentence], batch_size: int = 32,
                 mask_stride: int = 0, autocast: bool = False) -> dict[str, Any]:
    """Finding 1 on encoded sentences: the error rate of masked K-B and K-F words (see the module docstring).

    Every view is one forward row; rows are sorted by length and run in batches of `batch_size`, and only the masked
    positions reach the masked-LM head (`masked_lm_forward`). Returns per class `words`, `errors`, `error_rate`,
    `loss` (mean over words of the mean cross-entropy of their pieces, nats), `pieces_per_word`,
    `single_piece_words`, `single_piece_error_rate`; `difference` (K-B - K-F per-sentence error rate: `mean`, `se`,
    `sentences`), `views` and `mask_stride`.
    """
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise TaskError(f"the cloze test needs a tokenizer with a mask token; {type(tokenizer).__name__} has none")
    rows: list[tuple[list[int], list[int], list[int]]] = []  # (input ids, labels, word tag per position)
    owners: list[tuple[int, int]] = []  # word tag -> (sentence, word index)
    for s, sentence in enumerate(sentences):
        for view in _views(sentence, mask_stride):
            ids, labels, tags = list(sentence.ids), [-100] * len(sentence.ids), [-1] * len(sentence.ids)
            for k in view:
                tag = len(owners)
                owners.append((s, k))
                for p in sentence.words[k][1]:
                    labels[p], ids[p], tags[p] = sentence.ids[p], mask_id, tag
            rows.append((ids, labels, tags))
    n_words = len(owners)
    wrong = torch.zeros(n_words, dtype=torch.long)
    loss_sum = torch.zeros(n_words, dtype=torch.float64)
    pieces = torch.zeros(n_words, dtype=torch.long)
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda r: len(rows[r][0]))
    with _evaluating(model), _autocast(model, autocast):
        for start in range(0, len(order), batch_size):
            chunk = [rows[r] for r in order[start : start + batch_size]]
            input_ids = _pad([c[0] for c in chunk], _pad_id(tokenizer))
            lengths = torch.tensor([len(c[0]) for c in chunk])
            attention = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
            labels = _pad([c[1] for c in chunk], -100)
            tags = _pad([c[2] for c in chunk], -1)
            logits, targets, _ = masked_lm_forward(model, {"input_ids": input_ids.to(device),
                                                           "attention_mask": attention.to(device),
                                                           "labels": labels.to(device)})
            word = tags[labels.ne(-100)]
            logits, targets = logits.float().cpu(), targets.cpu()
            wrong.index_add_(0, word, logits.argmax(-1).ne(targets).long())
            loss_sum.index_add_(0, word, F.cross_entropy(logits, targets, reduction="none").double())
            pieces.index_add_(0, word, torch.ones_like(word))
    per_class: dict[str, dict[str, Any]] = {}
    by_sentence: dict[int, dict[str, list[int]]] = {}
    for c in CLASSES:
        tags = [t for t, (s, k) in enumerate(owners) if sentences[s].labels[k] == c]
        idx = torch.tensor(tags, dtype=torch.long)
        errors = wrong[idx].gt(0) if tags else torch.zeros(0, dtype=torch.bool)
        single = pieces[idx].eq(1) if tags else torch.zeros(0, dtype=torch.bool)
        n = len(tags)
        per_class[c] = {
            "words": n,
            "errors": int(errors.sum()),
            "error_rate": float(errors.float().mean()) if n else float("nan"),
            "loss": float((loss_sum[idx] / pieces[idx]).mean()) if n else float("nan"),
            "pieces_per_word": float(pieces[idx].double().mean()) if n else float("nan"),
            "single_piece_words": int(single.sum()),
            "single_piece_error_rate": float(errors[single].float().mean()) if int(single.sum()) else float("nan"),
        }
        for t, e in zip(tags, errors.tolist(), strict=True):
            by_sentence.setdefault(owners[t][0], {KB: [], KF: []})[c].append(int(e))
    pairs = [(float(np.mean(v[KB])), float(np.mean(v[KF]))) for v in by_sentence.values() if v[KB] and v[KF]]
    return {**per_class, "difference": _paired(pairs), "views": len(rows), "mask_stride": mask_stride}


# ---------------------------------------------------------------------------------------------------------------
# Finding 2: attention received
# ---------------------------------------------------------------------------------------------------------------
def attention_received(attentions: Sequence[torch.Tensor] | torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The attention every token receives, [B, T] (see the module docstring; 0 where `keep` is False).

    Args:
        attentions: per layer, [B, H, T, T] weights (query rows, key columns), e.g. a model's `attentions` output;
            or one tensor [L, B, H, T, T].
        keep: [B, T] bool, the tokens counted as attending rows and as receiving columns.
    """
    keep = keep.bool()
    cols = keep[:, None, None, :].float()
    rows = keep[:, None, :, None].float()
    n_kept = keep.sum(-1).float()  # [B]
    total = torch.zeros(keep.shape, dtype=torch.float32, device=keep.device)
    layers = 0
    for layer in attentions:
        a = layer.float() * cols
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        received = (a * rows).sum(2) / n_kept.clamp_min(1)[:, None, None]  # [B, H, T]: mean over kept rows
        total += received.mean(1)
        layers += 1
    if layers == 0:
        raise TaskError("no attention weights to score (the model returned none)")
    return total / layers * n_kept[:, None] * keep.float()


def _punctuation_ids(tokenizer: Any, ids: Iterable[int]) -> set[int]:
    marks = "▁Ġ#"
    out = set()
    for i in set(ids):
        token = tokenizer.convert_ids_to_tokens(int(i))
        if isinstance(token, str) and is_punctuation(token.lstrip(marks) or token):
            out.add(int(i))
    return out


def attention_scores(model: torch.nn.Module, tokenizer: Any, sentences: Sequence[Sentence], batch_size: int = 32,
                     autocast: bool = False) -> list[torch.Tensor]:
    """`attention_received` of every sentence (a [T] tensor per sentence, in its token order)."""
    special = {int(i) for i in tokenizer.all_special_ids}
    punct = _punctuation_ids(tokenizer, (t for s in sentences for t in s.ids))
    device = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(sentences)
    order = sorted(range(len(sentences)), key=lambda s: len(sentences[s].ids))
    with _evaluating(model), eager_attention(model), _autocast(model, autocast):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            input_ids = _pad([sentences[s].ids for s in chunk], _pad_id(tokenizer))
            lengths = torch.tensor([len(sentences[s].ids) for s in chunk])
            attention = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None])
            keep = attention & ~torch.isin(input_ids, torch.tensor(sorted(special | punct), dtype=torch.long))
            base = getattr(model, "base_model", model)
            outputs = base(input_ids=input_ids.to(device), attention_mask=attention.long().to(device),
                           output_attentions=True)
            weights = getattr(outputs, "attentions", None)
            if not weights or any(w is None for w in weights):
                raise TaskError(f"{type(model).__name__} returned no attention weights (output_attentions=True); "
                                f"its attention implementation is {getattr(model.config, '_attn_implementation', '?')}")
            scores = attention_received(weights, keep.to(device)).cpu()
            for row, s in enumerate(chunk):
                out[s] = scores[row, : lengths[row]]
    return [x for x in out if x is not None]


def attention_by_class(sentences: Sequence[Sentence], scores: Sequence[torch.Tensor]) -> dict[str, Any]:
    """Mean attention received by K-B and K-F words (a word: the mean of its pieces), with the paired difference."""
    values: dict[str, list[float]] = {KB: [], KF: []}
    pairs = []
    for sentence, score in zip(sentences, scores, strict=True):
        mine: dict[str, list[float]] = {KB: [], KF: []}
        for (_, positions), label in zip(sentence.words, sentence.labels, strict=True):
            if label is not None:
                mine[label].append(float(score[positions].mean()))
        for c in CLASSES:
            values[c] += mine[c]
        if mine[KB] and mine[KF]:
            pairs.append((float(np.mean(mine[KB])), float(np.mean(mine[KF]))))
    out: dict[str, Any] = {}
    for c in CLASSES:
        v = np.array(values[c], dtype=np.float64)
        out[c] = {"words": len(v), "mean": float(v.mean()) if len(v) else float("nan"),
                  "se": float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")}
    out["difference"] = _paired(pairs)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Both findings
# ---------------------------------------------------------------------------------------------------------------
def analyze(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str],
            lexicon: Lexicon | Collection[str] | None = None, batch_size: int = 32, max_length: int = 64,
            mask_stride: int = 0, ner: NerFn | None = None, autocast: bool = False) -> dict[str, Any]:
    """Both findings on `texts` (see the module docstring).

    Args:
        model, tokenizer: a masked-LM model (`load_model(..., kind="masked-lm")`) and its tokenizer.
        texts: sentences; each is truncated to `max_length` tokens.
        lexicon: the lemmas for K-B spans (default: WordNet's, `wordnet.lemma_set()`).
        batch_size: forward rows per batch.
        mask_stride: 0 masks one word per forward row (the exact cloze test); s >= 2 masks every s-th word together.
        ner: optional named-entity spans (see `label_words`).
        autocast: bfloat16 autocast (faster on recent CPUs; argmax ties may flip).

    Returns a dict: `sentences`, `words` (labelled counts and `unlabelled`), `lexicon_size`, `cloze`
    (`cloze_errors`), `attention` (`attention_by_class`), `settings` and `seconds`.
    """
    started = time.perf_counter()
    lex = _default_lexicon() if lexicon is None else Lexicon.of(lexicon)
    sentences = encode_sentences(tokenizer, texts, lex, max_length, ner)
    if not sentences:
        raise TaskError("analyze needs at least one text")
    counts = {KB: 0, KF: 0, "unlabelled": 0}
    for s in sentences:
        for label in s.labels:
            counts[label if label is not None else "unlabelled"] += 1
    cloze = cloze_errors(model, tokenizer, sentences, batch_size, mask_stride, autocast)
    attention = attention_by_class(sentences, attention_scores(model, tokenizer, sentences, batch_size, autocast))
    return {
        "sentences": len(sentences),
        "words": counts,
        "lexicon_size": len(lex),
        "cloze": cloze,
        "attention": attention,
        "settings": {"batch_size": batch_size, "max_length": max_length, "mask_stride": mask_stride,
                     "autocast": autocast, "ner": ner is not None},
        "seconds": round(time.perf_counter() - started, 3),
    }


def _num(x: float, digits: int = 3) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _diff(d: dict[str, float]) -> str:
    if not d["sentences"]:
        return "n/a"
    return f"{d['mean']:+.3f} ± {_num(d['se'])} (n={d['sentences']})"


def format_table(result: dict[str, Any]) -> str:
    """A small text table of `analyze`'s result: both findings, K-B against K-F."""
    cloze, att = result["cloze"], result["attention"]
    lines = [
        f"{result['sentences']} sentences; words: K-B {result['words'][KB]}, K-F {result['words'][KF]}, "
        f"unlabelled {result['words']['unlabelled']}",
        f"{'':28s} {'K-B':>8s} {'K-F':>8s}   K-B - K-F per sentence (± s.e.)",
        f"{'cloze error rate':28s} {_num(cloze[KB]['error_rate']):>8s} {_num(cloze[KF]['error_rate']):>8s}   "
        f"{_diff(cloze['difference'])}",
        f"{'cloze loss (nats/piece)':28s} {_num(cloze[KB]['loss']):>8s} {_num(cloze[KF]['loss']):>8s}",
        f"{'  one-piece words':28s} {cloze[KB]['single_piece_words']:>8d} {cloze[KF]['single_piece_words']:>8d}",
        f"{'  their error rate':28s} {_num(cloze[KB]['single_piece_error_rate']):>8s} "
        f"{_num(cloze[KF]['single_piece_error_rate']):>8s}",
        f"{'pieces per word':28s} {_num(cloze[KB]['pieces_per_word'], 2):>8s} "
        f"{_num(cloze[KF]['pieces_per_word'], 2):>8s}",
        f"{'attention received (1=unif.)':28s} {_num(att[KB]['mean']):>8s} {_num(att[KF]['mean']):>8s}   "
        f"{_diff(att['difference'])}",
    ]
    return "\n".join(lines)
