"""K-B/K-F labels, the batched cloze test against a one-word-at-a-time computation, and attention received against
a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from plmkit.core.testing import tiny_model
from plmkit.knowledge_pretraining.analysis import (
    Lexicon,
    analyze,
    attention_received,
    attention_scores,
    base_forms,
    cloze_errors,
    encode_sentences,
    format_table,
    label_words,
)

LEXICON = {"new york", "movie", "love", "story", "city", "zebra", "ice cream", "good", "a"}
TEXTS = ["the zebra of new york was a good story", "who is the movie city person", "a zebra and the ice cream",
         "the story , the zebra !"]


def _model(favourite: str | None = "the"):
    """A tiny masked-LM model whose head prefers `favourite` at every position (so some predictions are right)."""
    model, tokenizer = tiny_model("bert", head="masked-lm")
    if favourite is not None:
        with torch.no_grad():
            model.get_output_embeddings().bias[tokenizer.convert_tokens_to_ids(favourite)] += 20.0
    return model.eval(), tokenizer


def test_label_words_rules():
    words = ["The", "New", "York", "movies", "were", "loved", ",", "2001", "s", "zzq", "a", "Ice", "cream", "."]
    labels = label_words(words, LEXICON)
    assert labels == ["kf", "kb", "kb", "kb", "kf", "kb", None, None, None, None, "kf", "kb", "kb", None]
    # greedy longest match: "new york" as one span even though "york" alone is no lemma
    assert label_words(["york"], LEXICON) == [None]
    # a named-entity hook labels the content words of its spans K-B, numbers included
    ner = lambda ws: [(0, 2)]  # noqa: E731
    assert label_words(["Zqx", "1999", "of", "zebra"], LEXICON, ner=ner) == ["kb", "kb", "kf", "kb"]
    assert base_forms("studies")[:2] == ("studies", "study")
    assert Lexicon.of(["Ice_cream", "x y z"]).max_words == 3


def _direct_cloze(model, tokenizer, sentences, views):
    """Masks each view alone, runs the full model, and checks every piece's argmax (no batching, no hook)."""
    wrong, loss = {}, {}
    for s, sentence in enumerate(sentences):
        for view in views(sentence):
            ids = torch.tensor([sentence.ids])
            for k in view:
                ids[0, sentence.words[k][1]] = tokenizer.mask_token_id
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0]
            for k in view:
                positions = sentence.words[k][1]
                targets = torch.tensor([sentence.ids[p] for p in positions])
                wrong[(s, k)] = bool((logits[positions].argmax(-1) != targets).any())
                loss[(s, k)] = float(torch.nn.functional.cross_entropy(logits[positions], targets))
    return wrong, loss


@pytest.mark.parametrize("stride", [0, 2])
def test_cloze_errors_equal_a_direct_computation(stride):
    model, tokenizer = _model()
    sentences = encode_sentences(tokenizer, TEXTS, LEXICON)
    assert any(len(sentences[0].words[k][1]) > 1 for k in sentences[0].labelled())  # "zebra": several pieces

    def views(sentence):
        if stride == 0:
            return [[k] for k in sentence.labelled()]
        return [v for r in range(stride) if (v := [k for k in sentence.labelled() if k % stride == r])]

    result = cloze_errors(model, tokenizer, sentences, batch_size=3, mask_stride=stride)
    wrong, loss = _direct_cloze(model, tokenizer, sentences, views)
    assert result["views"] == sum(len(views(s)) for s in sentences)
    per_sentence = []
    for c in ("kb", "kf"):
        keys = [(s, k) for s, sent in enumerate(sentences) for k in sent.labelled() if sent.labels[k] == c]
        assert result[c]["words"] == len(keys)
        assert result[c]["errors"] == sum(wrong[key] for key in keys)
        assert result[c]["loss"] == pytest.approx(sum(loss[key] for key in keys) / len(keys), rel=1e-5)
    assert 0.0 < result["kf"]["error_rate"] < 1.0  # "the" is predicted everywhere: the K-F "the"s are right
    for s, sent in enumerate(sentences):
        rates = {c: [wrong[(s, k)] for k in sent.labelled() if sent.labels[k] == c] for c in ("kb", "kf")}
        if rates["kb"] and rates["kf"]:
            per_sentence.append(sum(rates["kb"]) / len(rates["kb"]) - sum(rates["kf"]) / len(rates["kf"]))
    mean = sum(per_sentence) / len(per_sentence)
    se = math.sqrt(sum((d - mean) ** 2 for d in per_sentence) / (len(per_sentence) - 1) / len(per_sentence))
    assert result["difference"]["sentences"] == len(per_sentence)
    assert result["difference"]["mean"] == pytest.approx(mean)
    assert result["difference"]["se"] == pytest.approx(se)


def test_attention_received_equals_a_hand_computation():
    torch.manual_seed(0)
    layers = [torch.softmax(torch.randn(1, 2, 4, 4), -1) for _ in range(2)]  # L=2, B=1, H=2, T=4
    keep = torch.tensor([[False, True, True, False]])  # [CLS] a b [SEP]
    got = attention_received(layers, keep)
    kept = [1, 2]
    want = torch.zeros(4)
    for t in kept:
        total = 0.0
        for a in layers:
            for h in range(2):
                rows = [a[0, h, i, t] / sum(a[0, h, i, j] for j in kept) for i in kept]
                total += sum(rows) / len(kept)
        want[t] = total / (2 * 2) * len(kept)
    torch.testing.assert_close(got[0], want)
    assert float(got[0, kept].mean()) == pytest.approx(1.0)  # the scores of a sentence average to 1
    uniform = [torch.full((1, 1, 4, 4), 0.25)]
    torch.testing.assert_close(attention_received(uniform, keep)[0], torch.tensor([0.0, 1.0, 1.0, 0.0]))
    # the stacked [L, B, H, T, T] form gives the same
    torch.testing.assert_close(attention_received(torch.stack(layers), keep), got)


def test_attention_scores_on_a_model_and_the_attention_implementation_is_restored():
    model, tokenizer = _model(None)
    before = model.config._attn_implementation
    sentences = encode_sentences(tokenizer, TEXTS, LEXICON)
    scores = attention_scores(model, tokenizer, sentences, batch_size=2)
    assert model.config._attn_implementation == before
    for sentence, score in zip(sentences, scores, strict=True):
        tokens = tokenizer.convert_ids_to_tokens(sentence.ids)
        kept = [i for i, t in enumerate(tokens) if t not in ("[CLS]", "[SEP]", ",", "!")]
        assert score.shape == (len(sentence.ids),)
        assert float(score[kept].mean()) == pytest.approx(1.0, abs=1e-5)
        assert float(score[0]) == 0.0 and float(score[-1]) == 0.0  # [CLS], [SEP] receive nothing by definition
    model.set_attn_implementation("eager")  # one sentence alone (no padding) scores as in its padded batch
    with torch.no_grad():
        attn = model.base_model(input_ids=torch.tensor([sentences[1].ids]), output_attentions=True).attentions
    keep = torch.tensor([[t not in tokenizer.all_special_ids for t in sentences[1].ids]])  # no punctuation in it
    torch.testing.assert_close(attention_received(attn, keep)[0], scores[1], atol=1e-5, rtol=1e-4)


def test_analyze_reports_both_findings():
    model, tokenizer = _model()
    result = analyze(model, tokenizer, TEXTS, lexicon=LEXICON, batch_size=4, mask_stride=0)
    assert result["sentences"] == len(TEXTS)
    assert result["words"]["kb"] == result["cloze"]["kb"]["words"] == result["attention"]["kb"]["words"]
    assert result["words"]["kf"] == result["cloze"]["kf"]["words"] > 0
    assert result["words"]["unlabelled"] >= 3  # the two punctuation marks and "person", "who" is K-F
    table = format_table(result)
    assert "cloze error rate" in table and "attention received" in table
    # truncation: the cut last word is left unlabelled
    cut = encode_sentences(tokenizer, ["the story of the zebra"], LEXICON, max_length=6)[0]
    assert cut.labels[-1] is None
