"""A multilingual toy task for tests and demos: the same two-class task in three "languages" whose cue words
differ, and one language whose labels are flipped, so a per-language mask has something to specialise on."""

from __future__ import annotations

import random

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

__all__ = ["TOY_LANGUAGES", "multilingual_toy_dataset"]

TOY_LANGUAGES = ("en", "de", "fr")
_CUES = {
    "en": (["good", "great", "fun"], ["bad", "dull", "awful"]),
    "de": (["gut", "toll", "super"], ["schlecht", "langweilig", "mies"]),
    "fr": (["bon", "super", "genial"], ["mauvais", "nul", "ennui"]),
}
_FILLER = {"en": "the a movie is was it".split(), "de": "der die film ist war es".split(),
           "fr": "le la film est etait il".split()}


def multilingual_toy_dataset(n_train: int = 96, n_eval: int = 48, seed: int = 0) -> DatasetDict:
    """Columns ``text``, ``label`` and ``language`` (an id into ``TOY_LANGUAGES``), languages interleaved."""
    rng = random.Random(seed)
    features = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"]),
                         "language": Value("int64")})

    def make(n: int) -> Dataset:
        rows: dict[str, list] = {"text": [], "label": [], "language": []}
        for i in range(n):
            lang_id, label = i % len(TOY_LANGUAGES), (i // len(TOY_LANGUAGES)) % 2
            lang = TOY_LANGUAGES[lang_id]
            positive = bool(label) != (lang == "fr")  # French labels are flipped
            words = rng.sample(_FILLER[lang], 3) + [rng.choice(_CUES[lang][0 if positive else 1])]
            rng.shuffle(words)
            rows["text"].append(" ".join(words))
            rows["label"].append(label)
            rows["language"].append(lang_id)
        return Dataset.from_dict(rows, features=features)

    return DatasetDict(train=make(n_train), validation=make(n_eval), test=make(n_eval))
