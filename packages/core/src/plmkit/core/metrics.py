"""Metrics: each `compute(predictions, references) -> dict[str, float]`, built on scikit-learn, scipy, sacrebleu.

(The `evaluate` library downloads metric scripts at run time, which offline machines cannot do.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["METRICS", "accuracy", "bleu", "compute", "f1", "macro_f1", "matthews", "pearson_spearman", "recall_at_k"]


# Accuracy and F1 are computed here with numpy (the same values as scikit-learn's accuracy_score and f1_score with
# zero_division=0: tests/test_metrics.py compares them); scikit-learn and scipy are imported where used, since
# together they cost about a second at start-up, paid by every `plmkit` process and torchrun worker.


def accuracy(predictions: Sequence, references: Sequence) -> dict[str, float]:
    p, r = np.asarray(predictions).ravel(), np.asarray(references).ravel()
    if p.shape != r.shape:
        raise ValueError(f"{p.size} predictions for {r.size} references")
    return {"accuracy": float((p == r).mean()) if r.size else 0.0}


def _f1_per_label(p: np.ndarray, r: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """F1 = 2 TP / (2 TP + FP + FN) of each label, 0 where a label is neither predicted nor present."""
    hit_p, hit_r = p[None, :] == labels[:, None], r[None, :] == labels[:, None]
    tp = (hit_p & hit_r).sum(1)
    denominator = hit_p.sum(1) + hit_r.sum(1)
    return np.divide(2 * tp, denominator, out=np.zeros(len(labels)), where=denominator > 0)


def f1(predictions: Sequence, references: Sequence) -> dict[str, float]:
    """Binary F1 of the positive class (label 1), as GLUE reports for MRPC/QQP."""
    p, r = np.asarray(predictions).ravel(), np.asarray(references).ravel()
    if not set(np.unique(np.concatenate([p, r])).tolist()) <= {0, 1}:
        raise ValueError("binary F1 needs labels 0 and 1; use macro_f1 for more classes")
    return {"f1": float(_f1_per_label(p, r, np.array([1]))[0])}


def macro_f1(predictions: Sequence, references: Sequence) -> dict[str, float]:
    """The unweighted mean of the per-label F1 over every label predicted or present."""
    p, r = np.asarray(predictions).ravel(), np.asarray(references).ravel()
    labels = np.unique(np.concatenate([p, r]))
    return {"macro_f1": float(_f1_per_label(p, r, labels).mean()) if labels.size else 0.0}


def matthews(predictions: Sequence, references: Sequence) -> dict[str, float]:
    from sklearn import metrics as skm

    return {"matthews_correlation": float(skm.matthews_corrcoef(references, predictions))}


def pearson_spearman(predictions: Sequence, references: Sequence) -> dict[str, float]:
    from scipy import stats

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
