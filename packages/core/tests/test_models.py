import numpy as np
import PIL.Image
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoProcessor,
    AutoTokenizer,
    BatchFeature,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.image_processing_utils import BaseImageProcessor
from transformers.modeling_outputs import BaseModelOutput

from plmkit.core.errors import ConfigError
from plmkit.core.models import (
    ALIASES,
    MODEL_TYPES,
    ModelNotFoundError,
    fresh_parameters,
    load_model,
    register_model_types,
)
from plmkit.core.processors import text_tokenizer
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


# ---------------------------------------------------------------------------------------------------------------
# Models built from a config (pre-training from scratch) and tokenizers given to load_model
# ---------------------------------------------------------------------------------------------------------------
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def test_bert_small_alias_uses_minilm_wordpiece():
    model, tok = load_model("bert-small", kind="masked-lm")
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size) == (
        4, 256, 4, 1024)
    assert config.vocab_size == len(tok) == 30522 and tok.tokenize("Unbelievable") == ["unbelievable"]
    assert fresh_parameters(model) == {n for n, _ in model.named_parameters()}
    again, _ = load_model("bert-small", kind="masked-lm")
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True))


def test_bert_small_without_minilm_falls_back_to_tiny_wordpiece(monkeypatch):
    import plmkit.core.models as models

    def missing():
        raise ModelNotFoundError("no minilm")

    monkeypatch.setattr(models, "_minilm_path", missing)
    with pytest.warns(UserWarning, match="tiny-bert's small WordPiece"):
        model, tok = load_model("bert-small", kind="masked-lm")
    assert len(tok) == len(ALIASES["tiny-bert"].tokenizer()) == model.config.vocab_size


def test_model_config_builds_a_random_model_of_a_model_type_with_the_given_tokenizer(tmp_path):
    model, tok = load_model("roberta", kind="masked-lm", model_config={**SMALL, "max_position_embeddings": 40},
                            tokenizer="tiny-xlmr", seed=3)
    assert type(model).__name__ == "RobertaForMaskedLM" and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tok) and type(tok).__name__ == "XLMRobertaTokenizer"
    assert (model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id) == (1, 0, 2)
    assert fresh_parameters(model) == {n for n, _ in model.named_parameters()}
    same, _ = load_model("roberta", kind="masked-lm", model_config={**SMALL, "max_position_embeddings": 40},
                         tokenizer_name_or_path="tiny-xlmr", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters(), strict=True))
    # saved, it reloads as a trained model, with its tokenizer
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    reloaded, tok2 = load_model(str(tmp_path), kind="masked-lm")
    assert fresh_parameters(reloaded) == frozenset() and len(tok2) == len(tok)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    model.eval(), reloaded.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, reloaded(**batch).logits)


def test_model_config_follows_the_tokenizer_special_ids():
    # tiny-bert's WordPiece has [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3: BART's bos/eos/decoder start follow [CLS]/[SEP]
    model, tok = load_model("bart", kind="seq2seq", tokenizer="tiny-bert", model_config={
        "d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 4,
        "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64})
    config = model.config
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id, config.decoder_start_token_id) == (
        tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.sep_token_id) == (0, 2, 3, 3)
    # values given in model_config win
    model, _ = load_model("bert", kind="masked-lm", tokenizer="tiny-xlmr", model_config={**SMALL, "pad_token_id": 0})
    assert model.config.pad_token_id == 0


def test_model_config_on_an_alias_and_on_a_folder(tmp_path):
    model, tok = load_model("tiny-bert", kind="masked-lm", model_config={"num_hidden_layers": 1})
    assert model.config.num_hidden_layers == 1 and model.config.hidden_size == 32
    trained, _ = load_model("tiny-bert", kind="masked-lm")
    trained.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    # a folder's architecture with random weights (not its weights), and the folder's tokenizer
    fresh, _ = load_model(str(tmp_path), kind="masked-lm", model_config={"num_attention_heads": 2}, seed=5)
    assert fresh.config.num_attention_heads == 2 and fresh.config.hidden_size == 32
    assert fresh_parameters(fresh) == {n for n, _ in fresh.named_parameters()}
    assert not torch.equal(fresh.bert.embeddings.word_embeddings.weight, trained.bert.embeddings.word_embeddings.weight)
    # a folder's architecture with a new tokenizer takes the tokenizer's vocabulary
    other, tok2 = load_model(str(tmp_path), kind="masked-lm", model_config={}, tokenizer="tiny-xlmr")
    assert other.config.vocab_size == len(tok2) != len(tok) and other.config.pad_token_id == tok2.pad_token_id


def test_model_config_errors():
    with pytest.raises(ConfigError, match=r"no option 'hiden_size' \(did you mean 'hidden_size'\?\)"):
        load_model("bert", kind="masked-lm", model_config={"hiden_size": 64}, tokenizer="tiny-bert")
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        load_model("bert", kind="masked-lm", model_config={})
    with pytest.raises(ModelNotFoundError, match=r"not a transformers model type \(close: bert"):
        load_model("bertt", kind="masked-lm", model_config={}, tokenizer="tiny-bert")
    with pytest.raises(ModelNotFoundError, match="is a model type, not a model: .* pass model_config"):
        load_model("bert", kind="masked-lm")
    with pytest.raises(ConfigError, match="has 193 tokens but model bert has a vocabulary of 50"):
        load_model("bert", kind="masked-lm", model_config={**SMALL, "vocab_size": 50}, tokenizer="tiny-bert")
    with pytest.raises(ConfigError, match="once"):
        load_model("tiny-bert", tokenizer="tiny-bert", tokenizer_name_or_path="tiny-xlmr")
    with pytest.raises(ConfigError, match="mapping"):
        load_model("bert", model_config=["hidden_size=32"], tokenizer="tiny-bert")


def test_a_pretrained_folder_with_another_tokenizer(tmp_path):
    model, tok = tiny_model("bert")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    # a tokenizer no larger than the vocabulary is used as given; a larger one is refused
    _, small = load_model(str(tmp_path), tokenizer=_tiny_wordpiece_subset(tmp_path / "tok"))
    assert len(small) < len(tok)
    with pytest.raises(ConfigError, match="has 257 tokens but model .* has a vocabulary of 193"):
        load_model(str(tmp_path), tokenizer="tiny-gpt2")


def _tiny_wordpiece_subset(folder):
    from transformers import BertTokenizer

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(tokens)})
    tok.save_pretrained(folder)
    return str(folder)


# ---------------------------------------------------------------------------------------------------------------
# Model types registered through plmkit.models
# ---------------------------------------------------------------------------------------------------------------
class ToyConfig(PretrainedConfig):
    model_type = "plmkit-toy"

    def __init__(self, vocab_size=300, hidden_size=8, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        super().__init__(**kwargs)


class ToyModel(PreTrainedModel):
    config_class = ToyConfig
    base_model_prefix = "toy"

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return BaseModelOutput(last_hidden_state=self.embed(input_ids))


class ToyImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values"]

    def __init__(self, size=8, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def preprocess(self, images, return_tensors=None, **kwargs):
        arrays = [np.asarray(img.convert("RGB").resize((self.size, self.size)), dtype=np.float32).transpose(2, 0, 1)
                  for img in images]
        return BatchFeature({"pixel_values": np.stack(arrays) / 255.0}, tensor_type=return_tensors)


class ToyProcessor(ProcessorMixin):
    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer)


def _register_toy():
    """What a package's `plmkit.models` entry point does: register its config, models and processors."""
    AutoConfig.register(ToyConfig.model_type, ToyConfig, exist_ok=True)
    AutoModel.register(ToyConfig, ToyModel, exist_ok=True)
    AutoImageProcessor.register(ToyConfig, ToyImageProcessor, exist_ok=True)
    AutoProcessor.register(ToyConfig, ToyProcessor, exist_ok=True)


@pytest.fixture
def toy_type():
    calls = []
    MODEL_TYPES.register("toy", lambda: (calls.append(1), _register_toy()))
    yield calls
    MODEL_TYPES.unregister("toy")


def test_a_registered_model_type_loads_from_a_folder_and_with_from_pretrained(toy_type, tmp_path):
    register_model_types()
    assert toy_type == [1] and "toy" in register_model_types() and toy_type == [1]  # each entry runs once
    model = ToyModel(ToyConfig(vocab_size=len(ALIASES["tiny-bert"].tokenizer())))
    model.save_pretrained(tmp_path)
    ALIASES["tiny-bert"].tokenizer().save_pretrained(tmp_path)
    loaded, tok = load_model(str(tmp_path), kind="base")
    plain = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is ToyModel and type(plain) is ToyModel and type(tok).__name__ == "BertTokenizer"
    ids = tok(TEXTS, padding=True, return_tensors="pt")["input_ids"]
    assert torch.equal(loaded(ids).last_hidden_state, model(ids).last_hidden_state)
    assert torch.equal(plain(ids).last_hidden_state, model(ids).last_hidden_state)
    # built from a config by its model type, like any transformers type
    fresh, _ = load_model("plmkit-toy", kind="base", model_config={"hidden_size": 4}, tokenizer="tiny-bert")
    assert type(fresh) is ToyModel and fresh.config.hidden_size == 4


def test_a_registered_processor_with_an_image_processor_comes_back_from_load_model(toy_type, tmp_path):
    register_model_types()
    tokenizer = ALIASES["tiny-bert"].tokenizer()
    ToyModel(ToyConfig(vocab_size=len(tokenizer))).save_pretrained(tmp_path)
    ToyProcessor(ToyImageProcessor(size=8), tokenizer).save_pretrained(tmp_path)
    _, processor = load_model(str(tmp_path), kind="base")
    assert type(processor) is ToyProcessor and type(processor.image_processor) is ToyImageProcessor
    assert text_tokenizer(processor) is processor.tokenizer and len(processor.tokenizer) == len(tokenizer)
    image = PIL.Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8))
    batch = processor(images=[image], text=["a good movie"], return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 3, 8, 8) and batch["input_ids"].shape[0] == 1
    # a tokenizer given to load_model replaces the processor's
    _, replaced = load_model(str(tmp_path), kind="base", tokenizer=_tiny_wordpiece_subset(tmp_path / "tok"))
    assert type(replaced) is ToyProcessor and len(replaced.tokenizer) == 7


# ---------------------------------------------------------------------------------------------------------------
# Head and FFN gates on the architectures the four remaining papers use (sparsity.transformer_blocks adapters)
# ---------------------------------------------------------------------------------------------------------------
def _ids(seed=0):
    return torch.randint(5, 150, (2, 7), generator=torch.Generator().manual_seed(seed))


def _llama(kv_heads):
    model, _ = load_model("llama", kind="causal-lm", tokenizer="tiny-gpt2",
                          model_config={**SMALL, "num_key_value_heads": kv_heads})
    ids = _ids()
    return model, lambda: model(input_ids=ids).logits, lambda: model(input_ids=ids, labels=ids).loss


def _bart():
    model, _ = load_model("tiny-bart", kind="seq2seq")
    ids = _ids()
    return model, lambda: model(input_ids=ids, decoder_input_ids=ids).logits, lambda: model(input_ids=ids, labels=ids).loss


def _vit():
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                              depth=2, num_heads=4, mlp_ratio=2.0, num_classes=3)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2])
    return model, lambda: model(images), lambda: torch.nn.functional.cross_entropy(model(images), labels)


ARCHITECTURES = {"llama": lambda: _llama(4), "llama-gqa": lambda: _llama(2), "bart": _bart, "vit": _vit}
BLOCKS = {"llama": (2, 4), "llama-gqa": (2, 2), "bart": (4, 4), "vit": (2, 4)}  # blocks, key/value heads


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_gates_on_llama_bart_and_timm_vit(arch):
    from plmkit.core.sparsity import add_structural_gates, transformer_blocks

    model, forward, _ = ARCHITECTURES[arch]()
    model.eval()
    blocks = transformer_blocks(model)
    layers, kv_heads = BLOCKS[arch]
    assert len(blocks) == layers
    assert [(b.num_heads, b.head_dim, b.num_kv_heads, b.intermediate_size) for b in blocks] == [(4, 8, kv_heads, 64)] * layers
    assert (blocks[0].ffn_gate is not None) == arch.startswith("llama")
    with torch.no_grad():
        before = forward()
    gates = add_structural_gates(model)
    assert gates.head_gates.shape == (layers, 4) and gates.neuron_gates.shape == (layers, 64)
    with torch.no_grad():
        assert torch.equal(forward(), before)  # gates at 1 change nothing
        last = layers - 1  # BART: a decoder layer; the others: the last layer
        gates.head_gates[last, 1] = 0.0
        gated = forward()
        assert not torch.allclose(gated, before)
    # A zero gate equals zeroing the head's input columns of the attention output projection (and likewise for an
    # FFN neuron and the FFN output projection).
    gates.neuron_gates.data[0, 5] = 0.0
    with torch.no_grad():
        gated = forward()
    gates.remove()
    with torch.no_grad():
        assert torch.equal(forward(), before)
        blocks[last].attn_out.weight[:, 8:16] = 0.0
        blocks[0].ffn_out.weight[:, 5] = 0.0
        torch.testing.assert_close(forward(), gated, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_gate_gradients_and_first_order_importance_on_llama_bart_and_timm_vit(arch):
    from plmkit.core.sparsity import add_structural_gates, first_order_importance

    model, _, loss = ARCHITECTURES[arch]()
    gates = add_structural_gates(model)
    model.eval()
    heads, neurons = torch.autograd.grad(loss(), [gates.head_gates, gates.neuron_gates])
    assert (heads.abs().sum(dim=1) > 0).all() and (neurons.abs().sum(dim=1) > 0).all()  # every layer gets gradient
    assert all(p.grad is None for p in model.parameters())
    head_importance, neuron_importance = first_order_importance(model, gates, [{}], loss_fn=lambda m, b: loss())
    torch.testing.assert_close(head_importance, heads.abs() / heads.abs().norm(dim=1, keepdim=True))
    assert neuron_importance.shape == neurons.shape and torch.isfinite(neuron_importance).all()
