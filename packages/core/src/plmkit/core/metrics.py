"""Metrics: each `compute(predictions, references) -> dict[str, float]`, built on scikit-learn, scipy, sacrebleu.

(The `evaluate` library downloads metric scripts at run time, which offline machines cannot do.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm

__all__ = ["METRICS", "accuracy", "bleu", "compute", "f1", "macro_f1", "matthews", "pearson_spearman", "recall_at_k"]


def accuracy(predictions: Sequence, references: Sequence) -> dict[str, float]:
    return {"accuracy": float(skm.accuracy_score(references, predictions))}


def f1(predictions: Sequence, references: Sequence) -> dict[str, float]:
    """Binary F1 of the positive class (label 1), as GLUE reports for MRPC/QQP."""
    return {"f1": float(skm.f1_score(references, predictions, average="binary", zero_division=0))}


def macro_f1(predictions: Sequence, references: Sequence) -> dict[str, float]:
    return {"macro_f1": float(skm.f1_score(references, predictions, average="macro", zero_division=0))}


def matthews(predictions: Sequence, references: Sequence) -> dict[str, float]:
    return {"matthews_correlation": float(skm.matthews_corrcoef(references, predictions))}


def pearson_spearman(predictions: Sequence, references: Sequence) -> dict[str, float]:
    p, r = np.asarray(predictions, dtype=float).ravel(), np.asarray(references, dtype=float).ravel()
    return {"pearson": float(stats.pearsonr(p, r)[0]), "spearman": float(stats.spearmanr(p, r)[0])}


def bleu(predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation); references may be one string or a list per prediction."""
    import sacrebleu

    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    streams = [list(s) for s in zip(*refs, strict=False)] if refs else []
    return {"bleu": float(sacrebleu.corpus_bleu(list(predictions), streams).score)}


def recall_at_k(scores: np.ndarray, references: Sequence[int], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Retrieval recall@k: row i of `scores` scores every candidate for query i; `references[i]` is the right one."""
    scores = np.asarray(scores)
    ref = np.asarray(references)
    rank = (scores > scores[np.arange(len(ref)), ref][:, None]).sum(axis=1)  # 0 = ranked first
    return {f"recall@{k}": float((rank < k).mean()) for k in ks}


METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "matthews": matthews,
    "pearson": pearson_spearman,
    "spearman": pearson_spearman,
    "bleu": bleu,
}


def compute(names: Sequence[str], predictions: Sequence, references: Sequence) -> dict[str, float]:
    """Compute several metrics at once (duplicates such as pearson+spearman are computed once)."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
    out: dict[str, float] = {}
    for fn in dict.fromkeys(METRICS[n] for n in names):
        out.update(fn(predictions, references))
    return out
