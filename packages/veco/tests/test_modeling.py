"""The layer equations against a hand-written reference, the CA-MLM terms, save/reload and generation."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from plmkit.core.errors import ConfigError
from plmkit.veco.modeling import (
    VecoForConditionalGeneration,
    VecoForPreTraining,
    VecoForSequenceClassification,
    VecoModel,
    count_parameters,
)
from plmkit.veco.tiny import tiny_model_config as tiny_config

X_TEXTS = ["the good film is fun", "a bad story"]
Y_TEXTS = ["le bon film", "une histoire très mauvaise et longue"]


def _ln(x, module):
    return F.layer_norm(x, (x.shape[-1],), module.weight, module.bias, module.eps)


def _attention(q_in, kv_in, attn, key_mask):
    """softmax(Q K^T / sqrt(d_head) + mask) V, written out head by head."""
    b, t, d = q_in.shape
    h = attn.num_heads
    dh = d // h
    q = (q_in @ attn.q_proj.weight.T + attn.q_proj.bias).view(b, t, h, dh).transpose(1, 2)
    k = (kv_in @ attn.k_proj.weight.T + attn.k_proj.bias).view(b, -1, h, dh).transpose(1, 2)
    v = (kv_in @ attn.v_proj.weight.T + attn.v_proj.bias).view(b, -1, h, dh).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
    return out @ attn.out_proj.weight.T + attn.out_proj.bias


def _reference(model, ids, mask, memory=None, memory_mask=None, self_attention=True):
    """E(x) = LN(sqrt(d) tok + pos); H-stream A = LN(H + SA(H)), H' = LN(A + FFN(A)); S-stream adds
    C = LN_c(A + CA(A, memory)) between them (Luo et al., Sec. 3.2)."""
    e = model.embeddings
    positions = (torch.cumsum(mask, 1) * mask) + 1  # fairseq positions, padding offset 1
    h = _ln(math.sqrt(model.config.hidden_size) * e.word_embeddings.weight[ids] + e.position_embeddings.weight[positions],
            e.LayerNorm)
    for layer in model.layers:
        a = _ln(h + _attention(h, h, layer.self_attn, mask), layer.self_attn_layer_norm) if self_attention else h
        if memory is not None:
            a = _ln(a + _attention(a, memory, layer.encoder_attn, memory_mask), layer.encoder_attn_layer_norm)
        ffn = F.gelu(a @ layer.fc1.weight.T + layer.fc1.bias) @ layer.fc2.weight.T + layer.fc2.bias
        h = _ln(a + ffn, layer.final_layer_norm)
    return h


def _batch(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_h_and_s_streams_follow_the_layer_equations(tokenizer):
    torch.manual_seed(0)
    model = VecoModel(tiny_config(tokenizer)).eval()
    x, mx = _batch(tokenizer, X_TEXTS)
    y, my = _batch(tokenizer, Y_TEXTS)
    with torch.no_grad():
        hx = model(x, mx).last_hidden_state
        hy = model(y, my).last_hidden_state
        torch.testing.assert_close(hx, _reference(model, x, mx), rtol=0, atol=1e-5)
        sx = model(x, mx, memory=hy, memory_mask=my).last_hidden_state
        torch.testing.assert_close(sx, _reference(model, x, mx, hy, my), rtol=0, atol=1e-5)
        ca_only = model(x, mx, memory=hy, memory_mask=my, self_attention=False).last_hidden_state
        torch.testing.assert_close(ca_only, _reference(model, x, mx, hy, my, self_attention=False), rtol=0, atol=1e-5)
    assert not torch.allclose(hx, sx)  # the plug-in module changes the stream


def test_parameter_groups_theta_s_and_theta_c(tokenizer):
    model = VecoForPreTraining(tiny_config(tokenizer))
    counts = count_parameters(model)
    d, layers = 32, 2
    assert counts["theta_c"] == layers * (4 * d * d + 4 * d + 2 * d)  # CA (4 d^2 + biases) + its LayerNorm


def _masked(ids, positions):
    labels = torch.full_like(ids, -100)
    for row, col in positions:
        labels[row, col] = ids[row, col]
    return labels


def test_ca_mlm_has_the_four_terms_of_eq_3(tokenizer):
    torch.manual_seed(1)
    model = VecoForPreTraining(tiny_config(tokenizer)).eval()
    x, mx = _batch(tokenizer, X_TEXTS)
    y, my = _batch(tokenizer, Y_TEXTS)
    lx, ly = _masked(x, [(0, 1), (0, 3), (1, 2)]), _masked(y, [(0, 2), (1, 1), (1, 4)])
    xm, ym = x.masked_fill(lx.ne(-100), tokenizer.mask_token_id), y.masked_fill(ly.ne(-100), tokenizer.mask_token_id)
    with torch.no_grad():
        out = model(xm, mx, lx, ym, my, ly)
        model.train()  # dropout is 0: the terms come back in training mode
        terms = model(xm, mx, lx, ym, my, ly).terms
        model.eval()
        hx, hy = model.veco(xm, mx).last_hidden_state, model.veco(ym, my).last_hidden_state
        sx = model.veco(xm, mx, memory=hy, memory_mask=my).last_hidden_state
        sy = model.veco(ym, my, memory=hx, memory_mask=mx).last_hidden_state

        def ce(hidden, labels):
            keep = labels.ne(-100)
            return F.cross_entropy(model.lm_head(hidden[keep]), labels[keep])

        expected = {"mlm_x": ce(hx, lx), "mlm_y": ce(hy, ly), "ca_mlm_x": ce(sx, lx), "ca_mlm_y": ce(sy, ly)}
    assert list(terms) == list(expected)
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.loss, sum(expected.values()), rtol=0, atol=1e-5)
    assert out.stats.shape == (2, 12) and out.stats[:, 1::3].sum() == 4 * 3  # 3 masked tokens per side and term
    with torch.no_grad():
        model.train()
        mlm_only = model(xm, mx, lx, ym, my, ly, objective="mlm").terms
        iclr = model(xm, mx, lx, ym, my, ly, objective="iclr").terms
    assert list(mlm_only) == ["mlm_x", "mlm_y"] and list(iclr)[-2:] == ["ca_mlm_x", "ca_mlm_y"]
    torch.testing.assert_close(mlm_only["mlm_x"], expected["mlm_x"], rtol=0, atol=1e-5)


def test_only_the_s_stream_trains_the_cross_attention(tokenizer):
    torch.manual_seed(2)
    model = VecoForPreTraining(tiny_config(tokenizer))
    x, mx = _batch(tokenizer, X_TEXTS)
    y, my = _batch(tokenizer, Y_TEXTS)
    lx, ly = _masked(x, [(0, 1), (1, 2)]), _masked(y, [(0, 2), (1, 1)])
    model(x, mx, lx, y, my, ly, objective="mlm").loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if ".encoder_attn" in n)
    model.zero_grad()
    model(x, mx, lx, y, my, ly).terms["ca_mlm_x"].backward()
    ca = [p.grad for n, p in model.named_parameters() if ".encoder_attn" in n]
    assert all(g is not None and g.abs().sum() > 0 for g in ca)


def test_decoder_layers_are_copies_of_the_kept_pretrained_layers(tokenizer):
    torch.manual_seed(3)
    pre = VecoForPreTraining(tiny_config(tokenizer))
    nlg = VecoForConditionalGeneration.from_pretraining(pre, keep_decoder_layers=[1], decoder_start_token_id=5)
    assert nlg.config.decoder_layers == 1 and nlg.config.keep_decoder_layers == [1]
    for key, value in pre.veco.layers[1].state_dict().items():  # SA, CA and FFN of layer 1
        torch.testing.assert_close(nlg.model.decoder.layers[0].state_dict()[key], value, rtol=0, atol=0)
    for i in range(2):  # encoder layer l and pre-trained layer l share SA/FFN (and the encoder has no CA)
        enc = nlg.model.encoder.layers[i].state_dict()
        assert not any(k.startswith("encoder_attn") for k in enc)
        for key, value in enc.items():
            torch.testing.assert_close(value, pre.veco.layers[i].state_dict()[key], rtol=0, atol=0)
    assert nlg.lm_head.weight.data_ptr() == nlg.model.shared.weight.data_ptr()
    assert nlg.model.decoder.layers[0].self_attn.q_proj.weight.data_ptr() != \
        pre.veco.layers[1].self_attn.q_proj.weight.data_ptr()  # untied copies
    with pytest.raises(ConfigError, match="no cross-attention"):
        VecoForConditionalGeneration.from_pretraining(VecoForPreTraining(tiny_config(tokenizer, cross_attention=False)))
    with pytest.raises(ConfigError, match="not layers"):
        VecoForConditionalGeneration.from_pretraining(pre, keep_decoder_layers=[5])


def _nlg(tokenizer, seed=4):
    torch.manual_seed(seed)
    start = tokenizer.convert_tokens_to_ids("[en]")
    nlg = VecoForConditionalGeneration.from_pretraining(VecoForPreTraining(tiny_config(tokenizer)),
                                                        decoder_start_token_id=start).eval()
    nlg.generation_config.eos_token_id = start
    return nlg


def test_generation_with_the_cache_equals_full_recomputation(tokenizer):
    nlg = _nlg(tokenizer)
    x, mx = _batch(tokenizer, X_TEXTS)
    cached = nlg.generate(input_ids=x, attention_mask=mx, max_length=8, num_beams=1, do_sample=False)
    full = nlg.generate(input_ids=x, attention_mask=mx, max_length=8, num_beams=1, do_sample=False, use_cache=False)
    assert torch.equal(cached, full)
    assert (cached[:, 0] == nlg.config.decoder_start_token_id).all()
    with torch.no_grad():  # teacher forcing gives the same next-token logits as the cached steps
        logits = nlg(input_ids=x, attention_mask=mx, decoder_input_ids=cached).logits
    assert torch.equal(logits[:, :-1].argmax(-1)[:, :3], cached[:, 1:4])


def test_save_and_reload_give_identical_outputs(tmp_path, tokenizer):
    torch.manual_seed(5)
    x, mx = _batch(tokenizer, X_TEXTS)
    y, my = _batch(tokenizer, Y_TEXTS)
    cases = [
        (VecoForPreTraining(tiny_config(tokenizer)), AutoModelForMaskedLM, {}),
        (VecoForSequenceClassification(tiny_config(tokenizer, plug_in=True, num_labels=3)),
         AutoModelForSequenceClassification, {"pair_input_ids": y, "pair_attention_mask": my}),
        (_nlg(tokenizer), AutoModelForSeq2SeqLM, {"decoder_input_ids": y}),
    ]
    for i, (model, auto, extra) in enumerate(cases):
        model.eval().save_pretrained(tmp_path / str(i))
        loaded = auto.from_pretrained(tmp_path / str(i)).eval()
        assert type(loaded) is type(model)
        with torch.no_grad():
            torch.testing.assert_close(loaded(input_ids=x, attention_mask=mx, **extra).logits,
                                       model(input_ids=x, attention_mask=mx, **extra).logits, rtol=0, atol=0)


def test_plug_in_needs_cross_attention_and_a_paired_text(tokenizer):
    with pytest.raises(ConfigError, match="no cross-attention weights"):
        tiny_config(tokenizer, cross_attention=False, plug_in=True)
    plain = VecoModel(tiny_config(tokenizer, cross_attention=False))
    x, mx = _batch(tokenizer, X_TEXTS)
    with pytest.raises(ConfigError, match="cross-attention"):
        plain(x, mx, memory=torch.zeros(2, 3, 32))
    classifier = VecoForSequenceClassification(tiny_config(tokenizer, plug_in=True, num_labels=2))
    with pytest.raises(ConfigError, match="paired text"):
        classifier(x, mx)


def test_output_positions_give_the_full_pass_at_those_positions(tokenizer):
    """CA-MLM computes the S-stream's last layer at the masked positions only: the same numbers as the full pass."""
    torch.manual_seed(6)
    model = VecoModel(tiny_config(tokenizer)).eval()
    x, mx = _batch(tokenizer, X_TEXTS + ["who"])
    y, my = _batch(tokenizer, Y_TEXTS + ["le film"])
    memory = model(y, my).last_hidden_state
    keep = torch.zeros_like(x, dtype=torch.bool)
    keep[0, [1, 4, 5]] = True
    keep[1, 2] = True  # row 2 keeps nothing
    with torch.no_grad():
        for self_attention in (True, False):
            full = model(x, mx, memory=memory, memory_mask=my, self_attention=self_attention).last_hidden_state
            some = model(x, mx, memory=memory, memory_mask=my, self_attention=self_attention,
                         output_positions=keep).last_hidden_state
            torch.testing.assert_close(some, full[keep], rtol=0, atol=1e-5)
        assert model(x, mx, memory=memory, memory_mask=my, output_positions=keep & False).last_hidden_state.shape == (0, 32)
        torch.testing.assert_close(model(x, mx, output_positions=keep).last_hidden_state,
                                   model(x, mx).last_hidden_state[keep], rtol=0, atol=1e-5)
        # S^0 = H^0: the S-stream may start from the H-stream's first self-attention sub-layer output
        h = model(x, mx, return_first_attended=True)
        torch.testing.assert_close(h.last_hidden_state, model(x, mx).last_hidden_state, rtol=0, atol=0)
        resumed = model(x, mx, memory=memory, memory_mask=my, first_attended=h.first_attended).last_hidden_state
        torch.testing.assert_close(resumed, model(x, mx, memory=memory, memory_mask=my).last_hidden_state,
                                   rtol=0, atol=1e-5)
