"""UPT pieces: POV builder, Eq. 3 weights and sampler, KSMLM construction, the loss, multi-token words, UPT-SE."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from plmkit.core.testing import tiny_dataset, tiny_model
from plmkit.core.training import MethodError, build_method
from plmkit.prompt_tuning import UPTMethod
from plmkit.prompt_tuning.ksmlm import OptionsKnowledgeRepository, ksmlm_examples
from plmkit.prompt_tuning.pov import label_word_ids, options_text, pov_template
from plmkit.prompt_tuning.weighting import TaskBalancedSampler, task_balanced_weights


def _model(**options):
    backbone, tok = tiny_model("bert")
    model = UPTMethod(**{"label_words": ["bad", "good"], **options}).prepare_model(backbone)
    model.bind_tokenizer(tok)
    return model, tok


def _batch(tok, n=8, seed=0):
    ds = tiny_dataset(n, n, 2, seed=seed)["train"]
    enc = tok(list(ds["text"]), padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor(list(ds["label"]))}


# -- POV ---------------------------------------------------------------------------------------------------------
def test_pov_lists_every_label_word_then_one_mask_prompt():
    assert options_text(["great", "terrible"]) == "Is it great or terrible ?"
    assert options_text(["a", "b", "c"]) == "Is it a, b or c ?"
    assert pov_template(["great", "terrible"]) == "{text} Is it great or terrible ? It is {mask} ."
    assert pov_template(["yes", "no"], pair=True).startswith("{text_a} {text_b} Is it yes or no ?")
    with pytest.raises(MethodError, match="exactly one"):
        pov_template(["a", "b"], prompt="It is .")


def test_truncation_keeps_options_and_prompt():
    model, tok = _model(max_length=16)
    ids = tok(["the movie was " + "very " * 40 + "good"], return_tensors="pt")
    row = model.encode_mask(ids["input_ids"], ids["attention_mask"], row_template=torch.tensor([0]))
    assert row[0].shape[0] == 1
    from plmkit.prompt_tuning.pov import apply_row_templates

    s = model.config.special_ids
    out = apply_row_templates(ids["input_ids"], ids["attention_mask"], model.config.templates_ids, torch.tensor([0]),
                              cls_id=s["cls"], sep_id=s["sep"], mask_id=s["mask"], pad_id=s["pad"], max_length=16)
    text = tok.decode(out.input_ids[0])
    assert len(out.input_ids[0]) == 16 and "is it bad or good? it is [MASK]. [SEP]" in text
    assert (out.input_ids[0] == tok.mask_token_id).sum() == 1 and out.input_ids[0, out.mask_positions[0]] == tok.mask_token_id


def test_rows_take_their_own_template():
    model, tok = _model(self_ensemble=3)
    batch = _batch(tok, 4)
    from plmkit.prompt_tuning.pov import apply_row_templates

    s = model.config.special_ids
    out = apply_row_templates(batch["input_ids"], batch["attention_mask"], model.config.templates_ids,
                              torch.tensor([0, 2, 1, 2]), cls_id=s["cls"], sep_id=s["sep"], mask_id=s["mask"],
                              pad_id=s["pad"], max_length=128)
    texts = [tok.decode(r[m.bool()]) for r, m in zip(out.input_ids, out.attention_mask, strict=True)]
    assert "it is [MASK]" in texts[0] and "the answer is [MASK]" in texts[1] and "it was [MASK]" in texts[2]
    assert all(r[p] == tok.mask_token_id for r, p in zip(out.input_ids, out.mask_positions, strict=True))


# -- multi-token label words -------------------------------------------------------------------------------------
def test_multi_token_label_words_use_their_first_sub_token():
    _, tok = tiny_model("bert")
    ids = label_word_ids(["good", "zap"], tok)  # 'zap' is three character tokens in the tiny vocabulary
    assert ids == [tok.convert_tokens_to_ids("good"), tok.convert_tokens_to_ids("z")]
    with pytest.raises(MethodError, match="share first sub-token"):
        label_word_ids(["zap", "zip"], tok)


# -- Eq. 3 -------------------------------------------------------------------------------------------------------
def test_task_balanced_weights_match_eq3_by_hand():
    sizes, gamma = [100, 10_000], 0.001
    # (ln 100 + 0.001) / (2*0.001 + ln 100 + ln 10000) = 4.606170 / 13.817511 = 0.333357
    w = task_balanced_weights(sizes, gamma)
    assert w[0] == pytest.approx((math.log(100) + gamma) / (2 * gamma + math.log(100) + math.log(10_000)))
    assert w[0] == pytest.approx(0.333357, abs=1e-6) and sum(w) == pytest.approx(1.0)
    assert w[1] > w[0] and w[1] / w[0] < 10_000 / 100  # large tasks gain only logarithmically
    with pytest.raises(MethodError, match="gamma"):
        task_balanced_weights(sizes, 0.0)


def test_sampler_follows_the_weights_and_the_ksmlm_share():
    tasks = [0] * 10 + [1] * 1000 + [-1] * 50
    weights = task_balanced_weights([10, 1000])
    sampler = TaskBalancedSampler(tasks, weights, batch_size=8, ksmlm_share=0.25, seed=0)
    drawn = np.asarray(tasks)[list(sampler)]
    assert len(drawn) == len(sampler) and len(drawn) % 8 == 0
    assert all((drawn[i : i + 8] == -1).sum() == 2 for i in range(0, len(drawn), 8))
    share0 = (drawn == 0).sum() / (drawn >= 0).sum()
    assert share0 == pytest.approx(weights[0], abs=0.05)  # ~0.33, not the proportional 0.01


# -- KSMLM -------------------------------------------------------------------------------------------------------
def _okr():
    words = ["good", "great", "nice", "bad", "awful", "terrible"]
    vectors = np.array([[1, 0.1], [1, 0.0], [0.9, 0.1], [-1, 0.1], [-1, 0.0], [-0.9, -0.1]])
    return OptionsKnowledgeRepository.build(words, vectors, num_clusters=2, seed=0)


def test_okr_clusters_and_distractor_from_the_least_similar_cluster():
    okr = _okr()
    assert len(set(okr.clusters[:3])) == 1 and len(set(okr.clusters[3:])) == 1 and okr.clusters[0] != okr.clusters[3]
    rng = np.random.default_rng(0)
    assert {okr.distractor("good", rng) for _ in range(20)} <= {"bad", "awful", "terrible"}
    assert {okr.distractor("awful", rng) for _ in range(20)} <= {"good", "great", "nice"}


def test_ksmlm_examples_mask_the_adjective_and_offer_it_with_a_distractor(tmp_path):
    okr = _okr()
    okr.save(tmp_path / "okr.json")
    okr = OptionsKnowledgeRepository.load(tmp_path / "okr.json")
    examples = ksmlm_examples(["A great movie .", "no adjective here"], okr, "[MASK]", np.random.default_rng(1))
    assert len(examples) == 1
    ex = examples[0]
    assert ex["text"] == "A [MASK] movie ."
    assert ex["options"][ex["answer"]] == "great" and ex["options"][1 - ex["answer"]] in {"bad", "awful", "terrible"}


def test_ksmlm_rows_weigh_lambda():
    model, tok = _model()
    model.config.ksmlm_task, model.config.ksmlm_weight = 1, 0.1
    model.config.templates_ids = model.config.templates_ids * 2
    batch = _batch(tok, 4)
    cands = torch.tensor(model.config.template_label_word_ids[0]).repeat(4, 1)
    task_ids = torch.tensor([0, 0, 1, 1])
    out = model(**batch, task_ids=task_ids, candidate_ids=cands)
    vocab = model.vocab_scores(model.encode_mask(batch["input_ids"], batch["attention_mask"], row_template=task_ids)[0])
    ce = F.cross_entropy(vocab.float(), cands.gather(1, batch["labels"][:, None]).squeeze(1), reduction="none")
    torch.testing.assert_close(out.loss, ce[:2].mean() + 0.1 * ce[2:].mean())


# -- the loss ----------------------------------------------------------------------------------------------------
def test_loss_is_over_the_whole_vocabulary_and_prediction_over_the_label_words():
    model, tok = _model()
    model.eval()
    batch = _batch(tok)
    out = model(**batch)
    feature, _ = model.encode_mask(batch["input_ids"], batch["attention_mask"], row_template=torch.zeros(8, dtype=torch.long))
    vocab = model.vocab_scores(feature).float()
    words = torch.tensor(model.config.label_word_ids)
    torch.testing.assert_close(out.loss, F.cross_entropy(vocab, words[batch["labels"]]))
    torch.testing.assert_close(out.logits, vocab[:, words])
    # The restricted softmax would give a smaller loss: the full-vocabulary one also pushes other words down.
    assert out.loss > F.cross_entropy(vocab[:, words], batch["labels"])


def test_self_ensemble_samples_prompts_in_training_and_averages_them_in_eval():
    model, tok = _model(self_ensemble=3, label_words=["bad|terrible", "good|great"])
    assert len(model.config.templates_ids) == 3
    assert model.config.template_label_words == [["bad", "good"], ["terrible", "great"], ["bad", "good"]]
    batch = _batch(tok)
    model.eval()
    per = []
    for t in range(3):
        logits = model._upt_rows(batch["input_ids"], batch["attention_mask"], None, torch.full((8,), t), None).logits
        per.append(F.log_softmax(logits, -1))
    torch.testing.assert_close(model(**batch).logits, torch.stack(per).mean(0))
    seen = []
    torch.manual_seed(0)
    original = model.encode_mask

    def spy(*args, row_template=None, **kwargs):
        seen.append(row_template.clone())
        return original(*args, row_template=row_template, **kwargs)

    model.encode_mask = spy
    model.train()
    model(**batch)
    assert len(seen) == 1 and len(set(seen[0].tolist())) > 1  # one pass, rows drew different prompts


# -- options -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"label_words": ["good"]}, "one word per label"),
        ({"label_words": ["a", "b"], "self_ensemble": 9}, "self_ensemble must be one of"),
        ({"label_words": ["a", "a"]}, "repeat a word"),
        ({"label_words": ["a", "b"], "prompt": "It is ."}, "exactly one"),
        ({"label_words": ["a", "b"], "options": "Is it ?"}, "no {options}"),
        ({"label_words": ["a", "b"], "gamma": 0}, "gamma must be > 0"),
        ({"label_words": ["a", "b"], "ksmlm_share": 1.0}, "ksmlm_share must be in"),
        ({"label_words": "a,b"}, "label_words is a list"),
        ({"sources": ["trec"]}, "has no option"),  # stage 1's sources are the upt_stage1 task's
        ({"label_words": ["a", "b"], "temperature": 1}, "has no option"),
    ],
)
def test_bad_options_are_explained(options, message):
    with pytest.raises(MethodError, match=message):
        build_method("upt", options)


def test_self_ensemble_alternatives_parse_from_a_flag():
    from plmkit.core.config import parse_method_options

    options = parse_method_options("upt", {}, {"label_words": "terrible|bad, great|good", "self_ensemble": "2"})
    method = build_method("upt", options)
    assert method.config.label_words == ["terrible|bad", "great|good"]
    assert method.config.pov()[1] == [["terrible", "great"], ["bad", "good"]]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs --task.sources"),
        ({"sources": ["trec", "trec"]}, "repeat a task"),
        ({"sources": ["trec", "imdb"]}, "unknown source task"),
        ({"sources": "trec,sms-spam"}, "sources is a list"),
        ({"sources": ["trec"], "temperature": 1}, "has no option"),
    ],
)
def test_bad_stage1_task_options_are_explained(options, message):
    from plmkit.core.errors import TaskError
    from plmkit.core.tasks import build_task

    with pytest.raises(TaskError, match=message):
        build_task("upt_stage1", options)


def test_label_word_count_must_match_the_task():
    backbone, _ = tiny_model("bert", num_labels=3)
    with pytest.raises(MethodError, match="the task has 3 labels"):
        UPTMethod(label_words=["bad", "good"]).prepare_model(backbone)


def test_stage1_with_a_ksmlm_share_needs_a_repository():
    from types import SimpleNamespace

    from plmkit.core.tasks import build_task

    backbone, tok = tiny_model("bert")
    ctx = SimpleNamespace(task=build_task("upt_stage1", {"sources": ["trec", "sms-spam"]}), processor=tok)
    with pytest.raises(MethodError, match="needs KSMLM rows: pass --task.okr"):
        UPTMethod().prepare_model(backbone, ctx)
    model = UPTMethod(ksmlm_share=0.0).prepare_model(backbone, ctx)  # UPT without KSMLM
    assert len(model.config.templates) == 2 and model.config.ksmlm_task == -1
    assert model.config.templates[1] == "{text} Is it normal or spam ? It is {mask} ."
