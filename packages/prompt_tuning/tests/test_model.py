import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from plmkit.core.models import register_model_types
from plmkit.core.testing import tiny_dataset, tiny_model
from plmkit.core.training import MethodError
from plmkit.prompt_tuning import CPTuningMethod, PromptModel, PromptTuningMethod, compute_anchors, predict
from plmkit.prompt_tuning.anchors import NO_ANCHOR, NO_SCORE, centroid_scores, nearest_scores


def _unit(degrees):
    return torch.tensor([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees])


def test_nearest_and_centroid_disagree_where_they_should():
    """Class 0 anchors at 0 and 170 degrees (mean direction ~85), class 1 at 60 and 70; a query at 20 degrees is
    nearest to a class-0 anchor but to the class-1 centroid."""
    anchors, labels, ids = _unit([0, 170, 60, 70]), torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 2, 3])
    query, qid = _unit([20]), torch.tensor([NO_ANCHOR])
    nn_scores = nearest_scores(query, qid, anchors, labels, ids, 2)
    assert nn_scores.argmax(-1).item() == 0
    torch.testing.assert_close(nn_scores, torch.tensor([[math.cos(math.radians(20)), math.cos(math.radians(40))]]))
    assert centroid_scores(query, qid, anchors, labels, ids, 2).argmax(-1).item() == 1


def test_an_example_is_never_its_own_anchor():
    anchors, labels, ids = _unit([0, 50, 40]), torch.tensor([0, 0, 1]), torch.tensor([7, 8, 9])  # example ids
    # The query is training example 7 (anchor 0) itself: with it excluded, its nearest anchor is 40 degrees (class
    # 1), not itself. The same features from outside the training set (id -1) do match anchor 0.
    query = _unit([0])
    assert nearest_scores(query, torch.tensor([7]), anchors, labels, ids, 2).argmax(-1).item() == 1
    assert nearest_scores(query, torch.tensor([NO_ANCHOR]), anchors, labels, ids, 2).argmax(-1).item() == 0
    # The centroid leaves the example out of its class mean; a class with no other anchor scores NO_SCORE.
    only = centroid_scores(_unit([40]), torch.tensor([9]), anchors, labels, ids, 2)
    assert only[0, 1].item() == NO_SCORE
    torch.testing.assert_close(only[0, 0], F.normalize(anchors[:2].sum(0), dim=0) @ _unit([40])[0])


def _prompt_model(method=None, kind="bert", **overrides):
    backbone, tok = tiny_model(kind, **overrides)
    model = (method or CPTuningMethod()).prepare_model(backbone)
    model.bind_tokenizer(tok)
    return model, tok


def _encoded(tok, split="train", n=16):
    ds = tiny_dataset(n, n, 2)[split]
    enc = tok(list(ds["text"]), padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor(list(ds["label"])),
            "example_id": torch.arange(n)}


def test_evaluating_on_the_training_set_is_leave_one_out():
    model, tok = _prompt_model(CPTuningMethod(prediction="nearest"), initializer_range=0.5)  # spread-out features (a fresh tiny model's are near-identical)
    train = _encoded(tok)
    compute_anchors(model, [train])
    assert torch.equal(model.anchor_ids, train["example_id"])
    model.eval()
    inputs = {"input_ids": train["input_ids"], "attention_mask": train["attention_mask"]}
    with torch.no_grad():
        out = model(**inputs, anchor_id=train["example_id"])  # the rows are the training examples themselves
        outside = model(**inputs)  # the same texts as new examples (no anchor id)
    sims = out.features @ model.anchor_features.T
    torch.testing.assert_close(sims.diagonal(), torch.ones(16), atol=1e-5, rtol=0)  # each example is an anchor
    loo = sims.clone().fill_diagonal_(-2.0)
    expected = model.anchor_labels[loo.argmax(-1)]
    assert torch.equal(out.logits.argmax(-1), expected)
    assert sims.fill_diagonal_(0).max() < 0.999 and out.logits.max() < 0.999  # no example scored against itself
    torch.testing.assert_close(outside.logits.max(-1).values, torch.ones(16), atol=1e-5, rtol=0)


def test_anchors_gathered_out_of_order_are_ordered_by_example_id():
    """Two processes each encode every other training example and `all_gather` concatenates their shards; the
    anchors come out in example-id order, as one process's."""
    from types import SimpleNamespace

    model, tok = _prompt_model(initializer_range=0.5)
    train = _encoded(tok)
    compute_anchors(model, [train])
    single = (model.anchor_features.clone(), model.anchor_labels.clone(), model.anchor_ids.clone())
    shards = [{k: v[r::2] for k, v in train.items()} for r in (0, 1)]  # rank r's rows, batched as ctx.batches does
    ctx = SimpleNamespace(model=model, global_step=1, batches=lambda: iter(shards), all_gather=lambda t: t,
                          train_dataset=train)
    CPTuningMethod()._refresh_anchors(ctx)
    for got, want in zip((model.anchor_features, model.anchor_labels, model.anchor_ids), single, strict=True):
        torch.testing.assert_close(got, want)


def test_a_checkpoint_with_another_number_of_anchors_loads():
    """A checkpoint saved after an evaluation holds anchors; the resumed run's fresh model has none yet."""
    model, tok = _prompt_model()
    compute_anchors(model, [_encoded(tok)])
    fresh, _ = _prompt_model()
    assert fresh.config.num_anchors == 0
    fresh.load_state_dict(model.state_dict())
    assert fresh.config.num_anchors == 16 and torch.equal(fresh.anchor_ids, model.anchor_ids)
    torch.testing.assert_close(fresh.anchor_features, model.anchor_features)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_save_reload_gives_identical_predictions(tmp_path, kind):
    model, tok = _prompt_model(CPTuningMethod(prediction="centroid"), kind)
    compute_anchors(model, [_encoded(tok)])
    test = _encoded(tok, "test")
    model.eval()
    with torch.no_grad():
        before = model(input_ids=test["input_ids"], attention_mask=test["attention_mask"]).logits
    model.save_pretrained(tmp_path)
    register_model_types()  # what the core does before loading: PromptModel joins the Auto classes
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, PromptModel) and reloaded.config.num_anchors == 16
    with torch.no_grad():
        after = reloaded(input_ids=test["input_ids"], attention_mask=test["attention_mask"]).logits
    torch.testing.assert_close(before, after)
    texts = list(tiny_dataset(16, 16, 2)["test"]["text"])
    assert predict(model, tok, texts) == predict(reloaded, tok, texts)


def test_training_step_has_pccl_and_mlm_terms():
    model, tok = _prompt_model(CPTuningMethod(mlm_weight=0.5))
    batch = _encoded(tok)
    model.train()
    out = model(**batch)
    assert out.logits is None and out.loss > 0
    out.loss.backward()
    assert model.prompt_embeddings.grad.abs().sum() > 0
    assert model.head.bias.grad.abs().sum() > 0  # only the MLM term reaches the vocabulary bias


def test_verbalizer_objective_scores_label_words():
    model, tok = _prompt_model(PromptTuningMethod(label_words=["bad", "good"]))
    batch = _encoded(tok)
    out = model(**batch)
    assert out.logits.shape == (16, 2)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, batch["labels"]))
    assert model.config.label_word_ids == tok.convert_tokens_to_ids(["bad", "good"])


def test_unusable_models_and_words_are_explained():
    model, tok = tiny_model("bert")
    prompt = PromptTuningMethod(label_words=["bad", "zzzq"]).prepare_model(model)
    with pytest.raises(MethodError, match="one single-token word per label"):
        prompt.bind_tokenizer(tok)
    unbound = CPTuningMethod().prepare_model(tiny_model("bert")[0])
    with pytest.raises(MethodError, match="bind_tokenizer"):
        unbound(**_encoded(tok))
    with pytest.raises(MethodError, match="no anchors"):
        unbound.bind_tokenizer(tok)
        unbound.eval()(**_encoded(tok))


def test_prepare_model_binds_the_tokenizer_of_the_context():
    from types import SimpleNamespace

    backbone, tok = tiny_model("bert")
    model = PromptTuningMethod(label_words=["bad", "good"]).prepare_model(backbone, SimpleNamespace(processor=tok))
    assert model.config.label_word_ids == tok.convert_tokens_to_ids(["bad", "good"])
    assert model.config.special_ids["mask"] == tok.mask_token_id


def test_a_prompt_model_of_another_objective_is_converted_keeping_encoder_and_head(tmp_path):
    """CP-Tuning (or verbalizer prompt tuning) started from a UPT folder, e.g. `plmkit upt adapt-head`'s output:
    the encoder and masked-LM head carry over, the objective and prompt settings are the new method's."""
    from plmkit.prompt_tuning import UPTMethod

    backbone, _ = tiny_model("bert")
    upt = UPTMethod(label_words=["bad", "good"]).prepare_model(backbone)
    with torch.no_grad():
        upt.head.bias.fill_(0.25)
    converted = CPTuningMethod(num_prompt_tokens=2).prepare_model(upt)
    assert converted is not upt and converted.config.objective == "contrastive"
    assert converted.config.num_prompt_tokens == 2 and len(converted.prompt_embeddings) > 0
    for name, value in upt.encoder.state_dict().items():
        torch.testing.assert_close(converted.encoder.state_dict()[name], value)
    torch.testing.assert_close(converted.head.bias, upt.head.bias)
    verbalizer = PromptTuningMethod(label_words=["bad", "good"]).prepare_model(upt)
    assert verbalizer.config.objective == "verbalizer" and verbalizer.config.label_words == ["bad", "good"]
    same = UPTMethod(label_words=["bad", "good"]).prepare_model(upt)
    assert same is upt  # the same objective keeps the model (how a saved run is reloaded)

