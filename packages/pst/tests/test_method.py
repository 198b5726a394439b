"""PSTMethod on tiny models: targets, freezing, schedule, parameter counts, export and option errors."""

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
)

from plmkit.core.models import load_model
from plmkit.core.pruning import PruningMethod
from plmkit.core.sparsity import cubic_sparsity, masked_layers, set_sparsity
from plmkit.core.testing import tiny_model
from plmkit.core.training import MethodError, build_method
from plmkit.pst import PSTConfig, PSTLinear, PSTMethod, pst_factor_count, pst_layers, pst_parameter_counts

GOLDEN = json.loads((Path(__file__).parent / "data" / "reference_golden.json").read_text())


@pytest.mark.parametrize("total", ["1000", "137"])
def test_schedule_matches_the_reference_at_the_boundaries_and_midpoint(total):
    for step, expected in GOLDEN["schedule"][total]:
        got = cubic_sparsity(step, int(total), 0.9, 0.0, initial_warmup=0.1, final_warmup=0.3)
        assert got == pytest.approx(expected, abs=1e-12), (step, got, expected)


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlmr"])
def test_encoders_get_six_pst_linears_per_layer_and_only_pst_tensors_train(kind):
    model, _ = tiny_model(kind)
    model = PSTMethod(sparsity=0.5, train_head="false").prepare_model(model)
    layers = pst_layers(model)
    assert len(layers) == 6 * model.config.num_hidden_layers
    assert all(".encoder.layer." in name for name, _ in layers)
    trainable = {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set("UVABRC")


def _head_trained(model):
    return {n for n, p in model.named_parameters() if p.requires_grad and n.rsplit(".", 1)[-1] not in set("UVABRC")}


@pytest.mark.parametrize("train_head", [True, "true", "auto"])
def test_a_new_head_trains_by_default_and_on_request(train_head):
    model, _ = tiny_model("bert")  # built from a config: every parameter is new, the head included
    model = PSTMethod(train_head=train_head).prepare_model(model)
    assert _head_trained(model) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight",
                                    "classifier.bias"}


def test_a_loaded_head_stays_as_the_reference_leaves_it(tmp_path):
    trained, tokenizer = tiny_model("bert")
    trained.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, _ = load_model(str(tmp_path))  # classifier loaded from the folder: not new
    assert not PSTMethod().trains_head(model) and not _head_trained(PSTMethod().prepare_model(model))


def test_step_zero_equals_magnitude_pruning():
    pst_model, _ = tiny_model("bert")
    map_model, _ = tiny_model("bert")
    map_model.load_state_dict(pst_model.state_dict())
    PSTMethod().prepare_model(pst_model)
    PruningMethod(scorer="magnitude").prepare_model(map_model)
    set_sparsity(pst_model, 0.6)
    set_sparsity(map_model, 0.6)
    for (name, pst), (_, mag) in zip(masked_layers(pst_model), masked_layers(map_model), strict=True):
        assert isinstance(pst, PSTLinear)
        assert torch.equal(pst.mask(), mag.mask()), name
    batch = {"input_ids": torch.randint(5, 90, (2, 9))}
    with torch.no_grad():
        assert torch.allclose(pst_model(**batch).logits, map_model(**batch).logits, atol=1e-6)


def test_gpt2_blocks_use_conv1d_layout_and_split_qkv():
    model, _ = tiny_model("gpt2")
    batch = {"input_ids": torch.randint(5, 90, (2, 7))}
    with torch.no_grad():
        before = model(**batch).logits
    PSTMethod().prepare_model(model)
    layers = dict(pst_layers(model))
    assert len(layers) == 4 * model.config.n_layer
    c_attn = layers["transformer.h.0.attn.c_attn"]
    assert c_attn.transposed and c_attn.blocks == 3 and layers["transformer.h.0.mlp.c_fc"].blocks == 1
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, before, atol=1e-6)  # V = 0 and sparsity 0: unchanged
    set_sparsity(model, 0.5)
    hidden = model.config.n_embd
    zeros = (c_attn.masked_weight() == 0).reshape(hidden, 3, hidden).sum(dim=(0, 2))
    assert zeros.tolist() == [hidden * hidden // 2] * 3


def test_llama_style_linears_are_targeted():
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config)
    PSTMethod(sparsity=0.5).prepare_model(model)
    names = [n for n, _ in pst_layers(model)]
    assert len(names) == 7 * 2 and "model.layers.0.self_attn.k_proj" in names and "lm_head" not in names
    loss = model(input_ids=torch.randint(0, 64, (2, 6)), labels=torch.randint(0, 64, (2, 6))).loss
    loss.backward()
    assert model.model.layers[0].mlp.down_proj.V.grad is not None


def test_parameter_formula_and_bert_base_from_its_config():
    assert pst_factor_count(768, 768, 8, 8) == 17 * 1536
    with torch.device("meta"):
        model = BertForSequenceClassification(BertConfig())
    PSTMethod().prepare_model(model)
    counts = pst_parameter_counts(model)
    assert counts["pst_parameters"] == counts["trainable_parameters"] == 2_820_096
    assert counts["model_parameters"] == 109_483_778
    assert counts["pruned_weights"] == 84_934_656
    assert counts["trainable_share_of_movement_pruning"] == pytest.approx(2_820_096 / (109_483_778 + 84_934_656))
    assert 0.0145 < counts["trainable_share_of_movement_pruning"] < 0.0146


def test_export_gives_plain_model_with_exact_zeros_and_identical_logits(tmp_path):
    model, _ = tiny_model("bert")
    method = PSTMethod(sparsity=0.7)
    model = method.prepare_model(model)
    with torch.no_grad():
        for _, layer in pst_layers(model):
            for p in (layer.V, layer.B, layer.R, layer.C):
                p.normal_(std=0.1)
    set_sparsity(model, 0.7)
    batch = {"input_ids": torch.randint(5, 90, (3, 11))}
    with torch.no_grad():
        expected = model.eval()(**batch).logits
    method.export(model).save_pretrained(tmp_path)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(plain(**batch).logits, expected, atol=1e-6)
    for name, module in plain.named_modules():
        if isinstance(module, torch.nn.Linear) and ".encoder.layer." in name:
            assert int((module.weight == 0).sum()) == int(0.7 * module.weight.numel()), name


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sparsity": 1.0}, "sparsity must be in"),
        ({"sparsity": -0.1}, "sparsity must be in"),
        ({"rank_uv": 0}, "rank_uv must be >= 1"),
        ({"rank_score": 0}, "rank_score must be >= 1"),
        ({"initial_sparsity": 0.5, "sparsity": 0.3}, "exceeds"),
        ({"initial_warmup": 0.6, "final_warmup": 0.5}, "sum below 1"),
    ],
)
def test_bad_options_raise_method_error(options, message):
    with pytest.raises(MethodError, match=message):
        build_method("pst", options)
    with pytest.raises(MethodError, match=message):
        PSTConfig(**options)


def test_no_target_raises():
    model, _ = tiny_model("bert")
    with pytest.raises(MethodError, match="no linear layers"):
        PSTMethod(targets=["nothing.*"]).prepare_model(model)


def test_targets_is_a_list_of_patterns():
    model, _ = tiny_model("bert")
    PSTMethod(targets=["*.attention.self.query", "*.output.dense"]).prepare_model(model)
    names = {n.split(".encoder.layer.")[1].split(".", 1)[1] for n, _ in pst_layers(model)}
    assert names == {"attention.self.query", "attention.output.dense", "output.dense"}
    assert PSTConfig().target_patterns() is None and PSTConfig(targets=[" ", ""]).target_patterns() is None
    with pytest.raises(MethodError, match="targets must be a list"):
        PSTConfig(targets="*.query,*.key")


def test_train_head_is_a_choice():
    from plmkit.core.training import option_choices

    assert option_choices(PSTConfig, "train_head") == ("auto", "true", "false")
    assert PSTConfig(train_head=False).train_head == "false"  # YAML booleans
    with pytest.raises(MethodError, match=r"train_head must be one of \['auto', 'true', 'false'\], got 'yes'"):
        PSTConfig(train_head="yes")


def test_flags_give_typed_options():
    from plmkit.core.config import parse_experiment

    cfg = parse_experiment(["--method", "pst", "--method.targets", "*.query,*.value", "--method.train_head", "false"])
    assert PSTConfig(**cfg.method_options) == PSTConfig(targets=["*.query", "*.value"], train_head="false")


def test_uses_only_the_v2_hooks():
    from plmkit.core.training import Method

    method = PSTMethod()
    assert not hasattr(method, "callbacks") and not hasattr(Method, "extra_loss")
    assert method.report() == {}  # nothing counted before training
