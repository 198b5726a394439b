"""SemVLP's trunk: the cross-modal attention plug-in/out equations against a hand-written reference, the single- and
two-stream masks, BERT equivalence of the text path, timm encoders of two families, save -> reload."""

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from plmkit.core.errors import ConfigError
from plmkit.core.models import load_model
from plmkit.vlp import SemVLPForPreTraining, SemVLPModel, attention_masks
from plmkit.vlp.modeling import SemVLPLayer
from plmkit.vlp.testing import RESNET, VIT, tiny_config


# ---------------------------------------------------------------------------------------------------------------
# A hand-written reference of the equations in plmkit.vlp.modeling's docstring (explicit softmax and LayerNorm)
# ---------------------------------------------------------------------------------------------------------------
def _ln(x, module):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + module.eps) * module.weight + module.bias


def _linear(x, module):
    return x @ module.weight.t() + module.bias


def ref_attention(sub, queries, keys):
    """LN(q + W_o softmax(Q K^T / sqrt(d)) V) of one sequence: queries [Lq, H], keys/values from keys [Lk, H]."""
    sa, nh, hd = sub.self, sub.self.num_heads, sub.self.head_dim
    q = _linear(queries, sa.query).view(-1, nh, hd).transpose(0, 1)
    k = _linear(keys, sa.key).view(-1, nh, hd).transpose(0, 1)
    v = _linear(keys, sa.value).view(-1, nh, hd).transpose(0, 1)
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1)
    context = (weights @ v).transpose(0, 1).reshape(queries.shape)
    return _ln(queries + _linear(context, sub.output.dense), sub.output.LayerNorm)


def ref_ffn(layer, x):
    hidden = torch.nn.functional.gelu(_linear(x, layer.intermediate.dense))
    return _ln(x + _linear(hidden, layer.output.dense), layer.output.LayerNorm)


def ref_two_stream(layer, text, image, keys):
    t1, v1 = ref_attention(layer.attention, text, text), ref_attention(layer.attention, image, image)
    kt, kv = (t1, v1) if keys == "self_attention" else (text, image)
    t2 = ref_attention(layer.crossattention, t1, kv)
    v2 = ref_attention(layer.crossattention, v1, kt)
    return ref_ffn(layer, t2), ref_ffn(layer, v2)


def _layer(keys="self_attention", seed=0):
    torch.manual_seed(seed)
    layer = SemVLPLayer(tiny_config(cross_attention_keys=keys), cross=True).eval()
    with torch.no_grad():  # LayerNorms away from identity, so the test sees which one is applied where
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("keys", ["self_attention", "layer_input"])
def test_two_stream_layer_follows_the_equations(keys):
    layer = _layer(keys)
    text, image = torch.randn(2, 5, 32), torch.randn(2, 4, 32)
    tm, vm = torch.ones(2, 5, dtype=torch.long), torch.ones(2, 4, dtype=torch.long)
    self_mask, cross_mask = attention_masks(tm, vm, "two", cross=True)
    with torch.no_grad():
        out = layer(torch.cat([text, image], 1), self_mask, cross_mask)
        for b in range(2):
            t_ref, v_ref = ref_two_stream(layer, text[b], image[b], keys)
            torch.testing.assert_close(out[b, :5], t_ref, atol=2e-5, rtol=0)
            torch.testing.assert_close(out[b, 5:], v_ref, atol=2e-5, rtol=0)


def test_cross_attention_is_unplugged_in_single_stream():
    layer = _layer()
    x = torch.randn(2, 9, 32)
    tm, vm = torch.ones(2, 5, dtype=torch.long), torch.ones(2, 4, dtype=torch.long)
    self_mask, cross_mask = attention_masks(tm, vm, "single", cross=True)
    assert cross_mask is None
    out = layer(x, self_mask, cross_mask)
    with torch.no_grad():
        for b in range(2):  # a plain BERT layer with full self-attention over [text; image]
            torch.testing.assert_close(out[b], ref_ffn(layer, ref_attention(layer.attention, x[b], x[b])), atol=2e-5, rtol=0)
    out.sum().backward()
    assert all(p.grad is None for p in layer.crossattention.parameters())
    assert all(p.grad is not None for p in layer.attention.parameters())


def test_one_cross_attention_serves_both_directions_with_its_own_layer_norm():
    layer = _layer()
    names = {n for n, _ in layer.named_parameters()}
    assert "crossattention.output.LayerNorm.weight" in names and "attention.output.LayerNorm.weight" in names
    assert layer.crossattention.output.LayerNorm is not layer.attention.output.LayerNorm
    assert not any(n.startswith(("crossattention_", "crossattention2")) for n in names)  # one module, not two


def test_cross_attention_only_in_the_top_k_layers():
    model = SemVLPModel(tiny_config(num_hidden_layers=3, cross_attention_layers=2))
    assert [layer.crossattention is not None for layer in model.encoder.layer] == [False, True, True]
    with pytest.raises(ConfigError, match="cross_attention_layers"):
        SemVLPModel(tiny_config(cross_attention_layers=3))


def test_masks_single_vs_two_stream():
    tm = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    vm = torch.ones(2, 3, dtype=torch.long)
    single, none = attention_masks(tm, vm, "single", cross=True)
    assert none is None
    assert single.shape == (2, 1, 7, 7) and single[0, 0, :, 3].sum() == 0 and single[1].all()  # padding only
    two_self, two_cross = attention_masks(tm, vm, "two", cross=True)
    text, image = slice(0, 4), slice(4, 7)
    # two-stream self-attention: no image token attends to text, no text token to the image
    assert not two_self[:, 0, image, text].any() and not two_self[:, 0, text, image].any()
    assert two_self[1, 0, image, image].all() and two_self[1, 0, text, text].all()
    # the plugged cross-attention: only the other modality (and never padding)
    assert not two_cross[:, 0, image, image].any() and not two_cross[:, 0, text, text].any()
    assert two_cross[:, 0, text, image].all() and two_cross[0, 0, image, 3].sum() == 0


def test_two_stream_lower_layers_keep_each_modality_on_its_own():
    torch.manual_seed(0)
    model = SemVLPModel(tiny_config(num_hidden_layers=2, cross_attention_layers=1)).eval()
    px = torch.randn(2, 3, 64, 64)
    a, b = torch.randint(5, 100, (2, 6)), torch.randint(5, 100, (2, 6))
    with torch.no_grad():
        grid = model.image_features(px)
        image = model.embeddings.image(grid)
        mask = torch.ones(2, 6, dtype=torch.long)
        vm = torch.ones(image.shape[:2], dtype=torch.long)

        def lower(ids, mode):
            x = torch.cat([model.embeddings.text(ids), image], 1)
            return model.run_layers(x, mask, vm, mode, 0, 1)[:, 6:]

        torch.testing.assert_close(lower(a, "two"), lower(b, "two"), atol=0, rtol=0)  # image ignores the text
        assert not torch.allclose(lower(a, "single"), lower(b, "single"))  # single-stream mixes them
        full_a = model(input_ids=a, pixel_values=px, mode="two").image_hidden_state
        full_b = model(input_ids=b, pixel_values=px, mode="two").image_hidden_state
        assert not torch.allclose(full_a, full_b)  # the top layer's cross-attention brings the text in


def test_text_path_is_bert_when_the_trunk_comes_from_a_bert_model():
    model, tokenizer = SemVLPForPreTraining.from_text_model("tiny-bert", **RESNET, codebook_size=8)
    bert, _ = load_model("tiny-bert", kind="base")
    batch = tokenizer(["a good movie", "the worst story of all"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model.eval().semvlp(**batch)
        theirs = bert.eval()(**batch)
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(ours.last_hidden_state[valid], theirs.last_hidden_state[valid], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, atol=1e-5, rtol=0)
    assert model.mlm_head.decoder.weight is model.semvlp.embeddings.word_embeddings.weight


@pytest.mark.parametrize("encoder", [RESNET, VIT, {**VIT, "region_grid": 1}], ids=["resnet", "vit", "vit-regions"])
def test_timm_encoders_of_two_families_train_and_reload_identically(encoder, tmp_path):
    from plmkit.vlp.modeling import register

    register()
    torch.manual_seed(0)
    model = SemVLPForPreTraining(tiny_config(encoder))
    size = encoder["image_size"]
    ids, px = torch.randint(5, 100, (3, 6)), torch.randn(3, 3, size, size)
    out = model(input_ids=ids, pixel_values=px, mode="two", itm_labels=torch.tensor([1, 0, 1]))
    out.loss.backward()
    backbone = model.semvlp.image_encoder.backbone
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)  # the encoder trains
    expected_tokens = 1 if encoder.get("region_grid") else 4
    assert model.semvlp.image_features(px).shape[1:3].numel() == expected_tokens
    model.save_pretrained(tmp_path / "m")
    reloaded, _ = load_model(str(tmp_path / "m"), kind="masked-lm", tokenizer="tiny-bert")
    model.eval()
    for mode in ("single", "two"):
        with torch.no_grad():
            a = model(input_ids=ids, pixel_values=px, mode=mode).logits
            b = reloaded.eval()(input_ids=ids, pixel_values=px, mode=mode).logits
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m", num_labels=3)
    assert classifier(input_ids=ids, pixel_values=px, mode="two").logits.shape == (3, 3)


def test_text_only_and_image_only_forwards():
    model = SemVLPForPreTraining(tiny_config()).eval()
    ids, px = torch.randint(5, 100, (2, 5)), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape == (2, 2)
        image_only = model.semvlp(pixel_values=px)
    assert image_only.pooler_output is None and image_only.last_hidden_state.shape[:2] == (2, 4)


def test_bad_configs_are_one_line_errors():
    with pytest.raises(ConfigError, match="timm has no model"):
        SemVLPModel(tiny_config({"timm_model_name": "no_such_net", "image_size": 32}))
    with pytest.raises(ConfigError, match="default_mode"):
        SemVLPModel(tiny_config(default_mode="three"))
    model = SemVLPModel(tiny_config(cross_attention_layers=0)).eval()
    with pytest.raises(ConfigError, match="cross_attention_layers >= 1"):
        model(input_ids=torch.randint(5, 100, (1, 4)), pixel_values=torch.randn(1, 3, 64, 64), mode="two")
    with pytest.raises(ConfigError, match="mode must be one of"):
        model(input_ids=torch.randint(5, 100, (1, 4)), mode="both")


@pytest.mark.parametrize("mode", ["single", "two"])
def test_text_padding_changes_nothing(mode):
    torch.manual_seed(0)
    model = SemVLPForPreTraining(tiny_config(num_hidden_layers=3, cross_attention_layers=2)).eval()
    ids, px = torch.randint(5, 100, (2, 6)), torch.randn(2, 3, 64, 64)
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(2, 6, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)], 1)
    with torch.no_grad():
        plain = model.semvlp(input_ids=ids, pixel_values=px, mode=mode)
        pad = model.semvlp(input_ids=padded, attention_mask=mask, pixel_values=px, mode=mode)
        logits = (model(input_ids=ids, pixel_values=px, mode=mode).logits,
                  model(input_ids=padded, attention_mask=mask, pixel_values=px, mode=mode).logits)
    torch.testing.assert_close(pad.text_hidden_state[:, :6], plain.text_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(pad.image_hidden_state, plain.image_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[1], logits[0], atol=1e-5, rtol=0)


def test_two_stream_below_the_cross_attention_is_each_modality_alone():
    """Below the first cross-attention layer a two-stream pass over [text; image] gives, for each part, exactly what
    the same layers give that modality on its own (text-only and image-only passes of the shared layers)."""
    torch.manual_seed(0)
    model = SemVLPModel(tiny_config(num_hidden_layers=3, cross_attention_layers=1)).eval()
    ids, px = torch.randint(5, 100, (2, 6)), torch.randn(2, 3, 64, 64)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    lower = model.encoder.first_cross
    with torch.no_grad():
        text, image = model.embeddings.text(ids), model.embeddings.image(model.image_features(px))
        vm = torch.ones(image.shape[:2], dtype=torch.long)
        joint = model.run_layers(torch.cat([text, image], 1), mask, vm, "two", 0, lower)
        alone_text = model.run_layers(text, mask, None, "two", 0, lower)
        alone_image = model.run_layers(image, None, vm, "two", 0, lower)
        # a text-only forward of the whole model is the plain BERT-shaped stack (no cross-attention plugged in)
        text_only = model(input_ids=ids, attention_mask=mask, mode="two").last_hidden_state
        stack = model.run_layers(text, mask, None, "single")
    valid = mask.bool()
    torch.testing.assert_close(joint[:, :6][valid], alone_text[valid], atol=1e-5, rtol=0)
    torch.testing.assert_close(joint[:, 6:], alone_image, atol=1e-5, rtol=0)
    torch.testing.assert_close(text_only[valid], stack[valid], atol=1e-5, rtol=0)
