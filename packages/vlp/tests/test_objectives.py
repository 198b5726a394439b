"""Each pre-training loss term against a direct computation; the method's masks, mode schedule and codebook."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from plmkit.core.errors import MethodError
from plmkit.core.models import load_tokenizer
from plmkit.vlp import SemVLPForPreTraining
from plmkit.vlp.method import SemVLPMethod, kmeans, mode_at_step, normalise
from plmkit.vlp.testing import tiny_config


def _model(**overrides):
    torch.manual_seed(0)
    return SemVLPForPreTraining(tiny_config(num_answers=3, **overrides)).eval()


def _inputs(b=3, t=6):
    torch.manual_seed(1)
    return {"input_ids": torch.randint(5, 100, (b, t)), "attention_mask": torch.ones(b, t, dtype=torch.long),
            "pixel_values": torch.randn(b, 3, 64, 64)}


def test_each_loss_term_is_its_definition():
    model = _model()
    inputs = _inputs()
    mlm = torch.full((3, 6), -100)
    mlm[0, 2], mlm[2, 4] = 17, 42
    visual_mask = torch.zeros(3, 4, dtype=torch.bool)
    visual_mask[1, 0] = visual_mask[2, 3] = True
    targets = torch.randn(3, 4, model.config.visual_feature_dim)
    codes = torch.randint(0, 8, (3, 4))
    itm = torch.tensor([1, 0, 1])
    answers = torch.tensor([2, 1, -100])
    with torch.no_grad():
        out = model(**inputs, mode="two", visual_mask=visual_mask, itm_labels=itm, mlm_targets=mlm,
                    visual_targets=targets, visual_codes=codes, answer_targets=answers)
        core = model.semvlp(**inputs, mode="two", visual_mask=visual_mask)
        text, image, pooled = core.text_hidden_state, core.image_hidden_state, core.pooler_output
        mlm_logits = model.mlm_head(text[mlm != -100])
        states = model.visual_head.transform(image[visual_mask])
        expected = {
            "mlm": F.cross_entropy(mlm_logits, mlm[mlm != -100]),
            "visual_regression": ((model.visual_head.regression(states) - targets[visual_mask]) ** 2).mean(),
            "visual_codebook": F.cross_entropy(model.visual_head.codebook(states), codes[visual_mask]),
            "itm": F.cross_entropy(model.itm_head(pooled), itm),
            # QA only on matched pairs with an answer: row 0 (row 1 is mismatched, row 2 has none)
            "qa": F.cross_entropy(model.qa_head(pooled[:1]), answers[:1]),
        }
    got = out.losses()
    assert set(got) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=1e-5, rtol=1e-5, msg=name)
    torch.testing.assert_close(out.loss, sum(expected.values()), atol=1e-5, rtol=1e-5)


def test_terms_with_nothing_to_predict_are_zero_and_keep_the_graph():
    model = _model().train()
    inputs = _inputs()
    out = model(**inputs, mode="single", mlm_targets=torch.full((3, 6), -100), visual_mask=torch.zeros(3, 4, dtype=bool),
                visual_targets=torch.randn(3, 4, model.config.visual_feature_dim), visual_codes=torch.zeros(3, 4).long(),
                itm_labels=torch.zeros(3).long(), answer_targets=torch.tensor([0, 1, 2]))
    for name in ("mlm", "visual_regression", "visual_codebook", "qa"):  # qa: every pair mismatched
        term = getattr(out, f"{name}_loss")
        assert float(term.detach()) == 0.0 and term.requires_grad
    out.loss.backward()


def test_mode_schedule_alternates_with_the_ratio():
    assert [mode_at_step(s, "alternate", 0.5) for s in range(4)] == ["single", "two", "single", "two"]
    third = [mode_at_step(s, "alternate", 1 / 3) for s in range(9)]
    assert third.count("two") == 3 and third[2] == "two" and third[:2] == ["single", "single"]
    assert {mode_at_step(s, "alternate", 0.0) for s in range(5)} == {"single"}
    assert {mode_at_step(s, "alternate", 1.0) for s in range(5)} == {"two"}
    assert {mode_at_step(s, "two", 0.5) for s in range(5)} == {"two"}
    with pytest.raises(MethodError, match="two_stream_ratio"):
        SemVLPMethod(two_stream_ratio=1.5)
    with pytest.raises(MethodError, match="mode_schedule"):
        SemVLPMethod(mode_schedule="random")


def test_kmeans_finds_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(50, 2, generator=gen) for c in centers])
    found = kmeans(points, 3, 10, seed=1)
    assert torch.cdist(centers, found).min(1).values.max() < 0.2
    torch.testing.assert_close(kmeans(points, 3, 10, seed=1), found, atol=0, rtol=0)  # seeded


def _ctx(model, step=0, seed=7):
    tokenizer = load_tokenizer("tiny-bert")
    return SimpleNamespace(model=model, global_step=step, args=SimpleNamespace(seed=seed), processor=tokenizer,
                           device=torch.device("cpu"))


def _batch(tokenizer, ids, longer: tuple[int, ...] = ()):
    captions = [f"a red square number {i}" + " beside a blue dot" * (i in longer) for i in ids]
    enc = tokenizer(captions, padding=True, return_tensors="pt")
    torch.manual_seed(3)
    return {**enc, "pixel_values": torch.randn(len(ids), 3, 64, 64), "example_id": torch.tensor(ids),
            "itm_labels": torch.ones(len(ids), dtype=torch.long)}


def test_method_masks_text_and_image_per_example_and_step():
    model = _model().train()
    method = SemVLPMethod(mlm_probability=0.5, visual_mask_probability=0.5)
    method.target_encoder = model.semvlp.image_encoder  # as on_train_begin would copy it
    method.centroids = torch.randn(8, model.config.visual_feature_dim)
    ctx = _ctx(model)
    tokenizer = ctx.processor
    batch = _batch(tokenizer, [0, 1, 2, 3])
    out = method.prepare_batch(dict(batch), ctx)
    special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
    chosen = out["mlm_targets"] != -100
    assert chosen.any() and not (chosen & special).any() and not (chosen & ~batch["attention_mask"].bool()).any()
    assert torch.equal(out["mlm_targets"][chosen], batch["input_ids"][chosen])
    assert out["visual_mask"].shape == (4, 4) and out["visual_mask"].any()
    assert out["mode"] == "single"
    targets = normalise(model.semvlp.image_encoder(batch["pixel_values"]).reshape(4, 4, -1))
    torch.testing.assert_close(out["visual_targets"], targets)
    nearest = ((targets[..., None, :] - method.centroids) ** 2).sum(-1).argmin(-1)
    assert torch.equal(out["visual_codes"], nearest)
    # the same example at the same step gets the same masks in another batch, padded longer (example 9 has a longer
    # caption); another step gets new ones
    again = method.prepare_batch(dict(_batch(tokenizer, [2, 9], longer=(9,))), ctx)
    assert again["mlm_targets"].shape[1] > chosen.shape[1]
    assert torch.equal(again["mlm_targets"][0, : chosen.shape[1]], out["mlm_targets"][2])
    assert torch.equal(again["input_ids"][0, : chosen.shape[1]], out["input_ids"][2])
    assert torch.equal(again["visual_mask"][0], out["visual_mask"][2])
    later = method.prepare_batch(dict(batch), _ctx(model, step=1))
    assert later["mode"] == "two"
    assert not torch.equal(later["visual_mask"], out["visual_mask"]) or not torch.equal(later["mlm_targets"],
                                                                                        out["mlm_targets"])
    # evaluation batches are left alone
    assert method.prepare_batch(dict(batch), _ctx(model.eval())) == batch


def test_loss_terms_are_the_weighted_model_terms():
    method = SemVLPMethod(mlm_weight=2.0, visual_codebook_weight=0.0, itm_weight=0.5)
    outputs = SimpleNamespace(mlm_loss=torch.tensor(1.5), visual_regression_loss=torch.tensor(0.25),
                              visual_codebook_loss=torch.tensor(3.0), qa_loss=None)
    terms = method.loss_terms(None, {}, outputs, None)
    assert {k: float(v) for k, v in terms.items()} == {"mlm": 3.0, "visual_regression": 0.25, "visual_codebook": 0.0}
    assert method.task_loss_weight == 0.5
