import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from plmkit.core.models import ALIASES, ModelNotFoundError, load_model
from plmkit.core.testing import tiny_model

KINDS = ["bert", "roberta", "xlmr", "gpt2"]
TEXTS = ["The movie was GREAT, really!", "bad 123 ñ"]


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_models_are_small_and_run(kind):
    model, tok = tiny_model(kind, num_labels=3)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size <= 64
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 3)


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_model_init_is_seeded(kind):
    a, _ = tiny_model(kind)
    b, _ = tiny_model(kind)
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=False):
        assert torch.equal(pa, pb), na


@pytest.mark.parametrize("kind", KINDS)
def test_save_reload_gives_identical_outputs(kind, tmp_path):
    model, tok = tiny_model(kind)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded, tok2 = load_model(str(tmp_path))
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    assert tok2(TEXTS, padding=True, return_tensors="pt")["input_ids"].equal(batch["input_ids"])
    assert AutoTokenizer.from_pretrained(tmp_path)(TEXTS[0])["input_ids"] == tok(TEXTS[0])["input_ids"]
    model.eval(), reloaded.eval(), plain.eval()
    with torch.no_grad():
        ref = model(**batch).logits
        assert torch.equal(reloaded(**batch).logits, ref)
        assert torch.equal(plain(**batch).logits, ref)


def test_masked_lm_task():
    model, tok = load_model("tiny-bert", kind="masked-lm")
    batch = tok(["a good movie"], return_tensors="pt")
    assert model(**batch).logits.shape[-1] == len(tok)


def test_minilm_alias_loads_the_real_model():
    model, tok = load_model("minilm", num_labels=2)
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert 22_000_000 < sum(p.numel() for p in model.parameters()) < 23_000_000
    assert tok.tokenize("Unbelievable")[0].islower()


def test_unknown_alias_fails_offline_with_the_alias_list():
    with pytest.raises(ModelNotFoundError) as err:
        load_model("no-such-model-xyz")
    message = str(err.value)
    assert "no-such-model-xyz" in message
    for alias in ALIASES:
        assert alias in message


def test_unknown_model_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown model kind"):
        load_model("tiny-bert", kind="translation")


@pytest.mark.parametrize("kind, key", [("bert", "max_position_embeddings"), ("gpt2", "n_positions")])
def test_tiny_model_defaults_can_be_overridden(kind, key):
    model, _ = tiny_model(kind, **{key: 64})
    assert getattr(model.config, key) == 64
