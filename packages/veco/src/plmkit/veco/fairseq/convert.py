"""Checkpoints both ways between `VecoForConditionalGeneration` and the fairseq plugin's model `veco`, and fairseq
data-bin folders from source<TAB>target files.

Dictionary: fairseq's `Dictionary` always starts with `<s> <pad> </s> <unk>`, then the symbols of `dict.txt`.
`write_dictionary` writes every other token of our vocabulary into `dict.txt`, in id order, language tokens
included (as the official VECO release's dictionary holds them). For an XLM-R-style vocabulary (those four at ids
0-3, as `VecoTokenizer` has them) fairseq's indices are then our ids; the conversion still maps each fairseq symbol
to our id by its string, so a dictionary in another order (or a vocabulary with other special ids) converts too.

Weights: the layer names are the same on both sides (`self_attn`, `encoder_attn`, `fc1`, ..., see
`plmkit.veco.modeling`); only the embeddings are named differently (`embed_positions` / `layernorm_embedding` vs
`embeddings.position_embeddings` / `embeddings.LayerNorm`), and fairseq keeps the shared embedding three times
(`encoder.embed_tokens`, `decoder.embed_tokens`, `decoder.output_projection`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from omegaconf import OmegaConf

from plmkit.core.errors import ConfigError, DataError
from plmkit.veco.configuration import VecoConfig
from plmkit.veco.fairseq import USER_DIR
from plmkit.veco.fairseq import model as _model  # noqa: F401  (registers model `veco`)
from plmkit.veco.fairseq import task as _task  # noqa: F401  (registers task `translation_from_pretrained_veco`)
from plmkit.veco.modeling import VecoForConditionalGeneration
from plmkit.veco.tokenization import VecoTokenizer

__all__ = ["export_fairseq_data", "from_fairseq", "load_fairseq", "to_fairseq", "write_dictionary"]

FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq's Dictionary puts these at 0..3
ACTIVATIONS = {"gelu": "gelu", "relu": "relu"}  # fairseq's gelu is the exact (erf) one, as transformers' "gelu"
#: fairseq option -> the value VecoForConditionalGeneration implements
REQUIRED = {"encoder_normalize_before": False, "decoder_normalize_before": False, "encoder_learned_pos": True,
            "decoder_learned_pos": True, "layernorm_embedding": True, "share_all_embeddings": True,
            "no_token_positional_embeddings": False, "cross_self_attention": False, "adaptive_input": False,
            "adaptive_softmax_cutoff": None, "no_cross_attention": False}
ARCHS = {"veco_small": (6, 768, 3072, 12), "veco_base": (12, 768, 3072, 12), "veco_large": (24, 1024, 4096, 16)}


def _vocabulary(tokenizer: VecoTokenizer) -> list[str]:
    return tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))


def write_dictionary(tokenizer: VecoTokenizer, path: str | Path) -> Path:
    """fairseq's `dict.txt` for our vocabulary (module docstring); `symbol 1` per line."""
    vocabulary = _vocabulary(tokenizer)
    missing = [s for s in FAIRSEQ_SPECIALS if s not in vocabulary]
    if missing:
        raise ConfigError(f"fairseq's dictionary needs the tokens {list(FAIRSEQ_SPECIALS)}; this vocabulary lacks "
                          f"{missing}")
    bad = [t for t in vocabulary if not t or re.search(r"\s", t)]
    if bad:
        raise ConfigError(f"tokens with whitespace cannot be written to a fairseq dict.txt: {bad[:5]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{t} 1\n" for t in vocabulary if t not in FAIRSEQ_SPECIALS), encoding="utf-8")
    return path


def _our_ids(symbols: list[str], tokenizer: VecoTokenizer) -> torch.Tensor:
    """Our id of each fairseq symbol (a bijection between the two vocabularies, or a ConfigError)."""
    vocabulary = tokenizer.get_vocab()
    only_fairseq = [s for s in symbols if s not in vocabulary]
    only_ours = sorted(set(vocabulary) - set(symbols))
    if only_fairseq or only_ours or len(symbols) != len(vocabulary):
        raise ConfigError(f"the fairseq dictionary ({len(symbols)} symbols) and the tokenizer ({len(vocabulary)} "
                          f"tokens) differ: only in fairseq {only_fairseq[:5]}, only in the tokenizer "
                          f"{only_ours[:5]}; convert with the tokenizer the dictionary was written from")
    return torch.tensor([vocabulary[s] for s in symbols])


def _rename(key: str) -> str | None:
    """A fairseq `veco` parameter name -> ours (None: a tied copy of the shared embedding, or a version buffer)."""
    side, _, rest = key.partition(".")
    if rest in ("embed_tokens.weight", "output_projection.weight", "version"):
        return None
    rest = rest.replace("embed_positions.", "embeddings.position_embeddings.")
    rest = rest.replace("layernorm_embedding.", "embeddings.LayerNorm.")
    return f"model.{side}.{rest}"


def load_fairseq(checkpoint: str | Path, data: str | Path | None = None,
                 overrides: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """fairseq's own loading of a `veco` checkpoint: (model in eval mode, task with its dictionaries). `data`: the
    folder with `dict.{src,tgt}.txt`, when it is not where the checkpoint was trained; `overrides`: fairseq options
    (e.g. `{"decoder_layers": 1, "keep_decoder_layers": "1"}`)."""
    overrides = {**(overrides or {}), **({"data": str(data)} if data is not None else {})} or None
    try:
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides=overrides)
    except FileNotFoundError as err:
        raise DataError(f"cannot load the fairseq checkpoint {checkpoint}: {err} (pass the data-bin folder with the "
                        "dictionaries as data)") from None
    return models[0].eval(), task


def from_fairseq(checkpoint: str | Path, tokenizer: VecoTokenizer,
                 data: str | Path | None = None) -> VecoForConditionalGeneration:
    """A fairseq `veco` checkpoint (fairseq-train's or `to_fairseq`'s) as `VecoForConditionalGeneration`, with the
    generation config of the official task (start and stop at `[tgt]`); `tokenizer` is the vocabulary the fairseq
    dictionary was written from (`write_dictionary`), and gets the checkpoint's languages as src_lang / tgt_lang
    (so that it saves beside the model as the translation tokenizer)."""
    fairseq_model, task = load_fairseq(checkpoint, data)
    args = fairseq_model.args
    if not args.arch.startswith("veco"):
        raise ConfigError(f"{checkpoint} is a fairseq {args.arch!r} model; only the plugin's veco_* archs convert")
    wrong = {k: getattr(args, k, None) for k, v in REQUIRED.items() if getattr(args, k, None) != v}
    pairs = [("encoder_embed_dim", "decoder_embed_dim"), ("encoder_ffn_embed_dim", "decoder_ffn_embed_dim"),
             ("encoder_attention_heads", "decoder_attention_heads"),
             ("max_source_positions", "max_target_positions")]
    wrong.update({f"{a}/{b}": (getattr(args, a), getattr(args, b)) for a, b in pairs
                  if getattr(args, a) != getattr(args, b)})
    if args.activation_fn not in ACTIVATIONS:
        wrong["activation_fn"] = args.activation_fn
    if wrong:
        raise ConfigError(f"{checkpoint}: options VECO's NLG model does not have: {wrong}")
    dictionary = task.target_dictionary
    ids = _our_ids(list(dictionary.symbols), tokenizer)
    if ids[dictionary.pad()] != 1:
        raise ConfigError("the padding token must be id 1 (fairseq's position offset)")
    tgt, src = task.cfg.target_lang, task.cfg.source_lang
    if dictionary.index(f"[{tgt}]") == dictionary.unk():
        raise ConfigError(f"the fairseq dictionary has no target language token [{tgt}]")
    start = int(ids[dictionary.index(f"[{tgt}]")])
    config = VecoConfig(
        vocab_size=len(tokenizer), hidden_size=args.encoder_embed_dim, num_hidden_layers=args.encoder_layers,
        num_attention_heads=args.encoder_attention_heads, intermediate_size=args.encoder_ffn_embed_dim,
        hidden_act=ACTIVATIONS[args.activation_fn], hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.attention_dropout, activation_dropout=args.activation_dropout,
        max_position_embeddings=args.max_source_positions + 2, scale_embedding=not args.no_scale_embedding,
        pad_token_id=1, bos_token_id=int(ids[dictionary.bos()]), eos_token_id=int(ids[dictionary.eos()]),
        is_encoder_decoder=True, decoder_layers=args.decoder_layers, decoder_start_token_id=start,
    )
    model = VecoForConditionalGeneration(config)
    fairseq_state = fairseq_model.state_dict()
    shared = torch.empty_like(fairseq_state["encoder.embed_tokens.weight"])
    shared[ids] = fairseq_state["encoder.embed_tokens.weight"]
    state = {"model.shared.weight": shared}
    state.update({ours: v for k, v in fairseq_state.items() if (ours := _rename(k)) is not None})
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight", "model.encoder.embeddings.word_embeddings.weight",
            "model.decoder.embeddings.word_embeddings.weight"}
    if set(missing) - tied or unexpected:
        raise ConfigError(f"{checkpoint} does not fit VECO's NLG model: missing {sorted(set(missing) - tied)[:5]}, "
                          f"unexpected {unexpected[:5]}")
    model.tie_weights()
    model.generation_config.decoder_start_token_id = model.generation_config.eos_token_id = start
    model.generation_config.pad_token_id = 1
    tokenizer.src_lang, tokenizer.tgt_lang = src, tgt
    return model.eval()


def _arch(config: VecoConfig) -> str:
    shape = (config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.num_attention_heads)
    return next((name for name, arch in ARCHS.items() if arch == shape), "veco_small")


def to_fairseq(model: VecoForConditionalGeneration, tokenizer: VecoTokenizer, out: str | Path,
               src: str | None = None, tgt: str | None = None) -> Path:
    """Write `model` as a fairseq `veco` checkpoint, `out/checkpoint.pt`, with `dict.{src,tgt}.txt` beside it
    (`out` is then a data folder fairseq-generate can take); `src`/`tgt` default to the tokenizer's languages.
    The fairseq model is built by fairseq from the options and loads the converted weights strictly."""
    c = model.config
    src = (src or tokenizer.src_lang or "").strip("[]")
    tgt = (tgt or tokenizer.tgt_lang or "").strip("[]")
    if not src or not tgt:
        raise ConfigError("give the source and target languages (the tokenizer has no src_lang / tgt_lang)")
    if c.hidden_act not in ACTIVATIONS.values() or abs(c.layer_norm_eps - 1e-5) > 1e-12 or c.pad_token_id != 1:
        raise ConfigError(f"fairseq's veco model needs gelu/relu, LayerNorm eps 1e-5 and pad id 1; this model has "
                          f"{c.hidden_act}, {c.layer_norm_eps}, {c.pad_token_id}")
    out = Path(out)
    for lang in (src, tgt):
        write_dictionary(tokenizer, out / f"dict.{lang}.txt")
    flags = {
        "arch": _arch(c), "encoder-layers": c.num_hidden_layers, "decoder-layers": c.decoder_layers,
        "encoder-embed-dim": c.hidden_size, "decoder-embed-dim": c.hidden_size,
        "encoder-ffn-embed-dim": c.intermediate_size, "decoder-ffn-embed-dim": c.intermediate_size,
        "encoder-attention-heads": c.num_attention_heads, "decoder-attention-heads": c.num_attention_heads,
        "max-source-positions": c.max_position_embeddings - 2, "max-target-positions": c.max_position_embeddings - 2,
        "activation-fn": c.hidden_act, "dropout": c.hidden_dropout_prob,
        "attention-dropout": c.attention_probs_dropout_prob, "activation-dropout": c.activation_dropout,
        "task": "translation_from_pretrained_veco", "source-lang": src, "target-lang": tgt,
        "user-dir": str(USER_DIR),
    }
    argv = [str(out), "--cpu", *(x for k, v in flags.items() for x in (f"--{k}", str(v)))]
    if not c.scale_embedding:
        argv.append("--no-scale-embedding")
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    fairseq_model = task.build_model(cfg.model)
    dictionary = task.target_dictionary
    ids = _our_ids(list(dictionary.symbols), tokenizer)
    ours = model.state_dict()
    state = {}
    for key in fairseq_model.state_dict():
        name = _rename(key)
        if name is not None:
            state[key] = ours[name]
        elif not key.endswith("version"):  # the shared embedding in fairseq's row order
            state[key] = ours["model.shared.weight"][ids]
    fairseq_model.load_state_dict(state, strict=False)
    unset = [k for k in fairseq_model.state_dict() if k not in state and not k.endswith("version")]
    if unset:
        raise ConfigError(f"the fairseq model has weights the conversion did not set: {unset[:5]}")
    checkpoint = {
        "args": None, "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": fairseq_model.state_dict(), "criterion": None,
        "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "Adam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {}, "extra_state": {"metrics": {}, "previous_training_time": 0},
    }
    path = out / "checkpoint.pt"
    checkpoint_utils.torch_persistent_save(checkpoint, str(path))
    return path


def _read_pairs(path: Path) -> Iterable[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row = line.split("\t")
        if len(row) != 2:
            raise DataError(f"{path}:{number}: expected source<TAB>target, got {len(row)} columns")
        yield row[0], row[1]


def export_fairseq_data(folder: str | Path, tokenizer: VecoTokenizer, src: str, tgt: str, out: str | Path,
                        workers: int = 1) -> Path:
    """A fairseq data-bin folder from `folder/{train,validation,test}.tsv` (source<TAB>target under a header, as
    `plmkit veco prepare-data` writes under `mt/SRC-TGT/`): the texts as SentencePiece pieces, binarised by
    fairseq-preprocess with `write_dictionary`'s `dict.txt` (the task appends `</s>` and the language tokens)."""
    from fairseq_cli import preprocess

    folder, out = Path(folder), Path(out)
    splits = {"train": "train", "validation": "valid", "test": "test"}
    found = {ours: theirs for ours, theirs in splits.items() if (folder / f"{ours}.tsv").exists()}
    if "train" not in found:
        raise DataError(f"{folder}/train.tsv is missing (source<TAB>target with a header)")
    for lang in (src, tgt):
        tokenizer.language_id(lang)  # the task appends [src] / [tgt]: both must be tokens
        if (out / f"dict.{lang}.txt").exists():
            raise DataError(f"{out} already holds fairseq data (dict.{lang}.txt); choose an empty folder")
    text = out / "text"
    text.mkdir(parents=True, exist_ok=True)
    for ours, theirs in found.items():
        pairs = list(_read_pairs(folder / f"{ours}.tsv"))
        for lang, column in ((src, 0), (tgt, 1)):
            lines = (" ".join(tokenizer.tokenize(pair[column])) for pair in pairs)
            (text / f"{theirs}.{lang}").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    dictionary = write_dictionary(tokenizer, text / "dict.txt")
    argv = ["--source-lang", src, "--target-lang", tgt, "--srcdict", str(dictionary), "--joined-dictionary",
            "--destdir", str(out), "--workers", str(workers)]
    for theirs in found.values():
        argv += [f"--{'train' if theirs == 'train' else theirs}pref", str(text / theirs)]
    preprocess.main(options.get_preprocessing_parser().parse_args(argv))
    return out
