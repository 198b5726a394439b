"""`plmkit veco ...`: what `plmkit train` does not cover (entry-point group `plmkit.commands`, name `veco`).

    plmkit veco prepare-data --out data/veco [--pairs de-en,fr-en,de-fr] [--mono en,de,fr] [--mt de-en]
    plmkit veco vocab --data data/veco --vocab_size 16000 --out tokenizers/veco     # joint SentencePiece + [en] [de] ...
    plmkit veco init-nlg --model RUN --src de --tgt en --out models/nlg [--keep_decoder_layers 2,3]
    plmkit veco init-nlg --config '{hidden_size: 256, ...}' --tokenizer TOK --src de --tgt en --out models/random
    plmkit veco export RUN_OR_FOLDER --output_dir DIR          # plain XLM-R (plug-out) or BART (NLG), with tokenizer
    plmkit veco retrieve --model M --tsv data/veco/mt/de-en/test.tsv [--layer K]       # Tatoeba-style P@1

fairseq (the extra `plmkit-veco[fairseq]`):

    plmkit veco fairseq-user-dir                              # the folder for fairseq's --user-dir
    plmkit veco export-fairseq-data --data data/veco/mt/de-en --tokenizer TOK --out data-bin/de-en
    plmkit veco convert checkpoints/checkpoint_best.pt --tokenizer TOK --out models/from-fairseq [--data DIR]
    plmkit veco convert models/nlg --out fairseq/nlg          # a VECO NLG folder -> checkpoint.pt + dict.*.txt

Pre-training and fine-tuning are `plmkit train` runs: `--task veco_pretrain --method veco` (CA-MLM), the core
`seq2seq` task on an `init-nlg` folder (translation), `classification` / `veco_classification` (NLU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from plmkit.core.errors import ConfigError, DataError

__all__ = ["main"]


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _translations(value: str | None) -> dict[str, list[str]] | None:
    """"en=web,kjv;de=elb" -> {"en": ["web", "kjv"], "de": ["elb"]}."""
    if not value:
        return None
    out = {}
    for part in value.split(";"):
        lang, sep, names = part.partition("=")
        if not sep:
            raise ConfigError(f"--translations takes LANG=NAME,NAME;LANG=NAME, got {part!r}")
        out[lang.strip()] = _list(names)
    return out


def _prepare_data(args: argparse.Namespace) -> None:
    from plmkit.veco.data import check_request, prepare_bible, write_data

    request = dict(pairs=_list(args.pairs), mono=_list(args.mono), translations=_translations(args.translations),
                   mt=_list(args.mt), classify=_list(args.classify))
    check_request(**request)  # bad codes fail before anything is downloaded
    prepare_bible(force=args.force)
    summary = write_data(args.out, max_pairs=args.max_pairs, **request)
    print(json.dumps(summary["files"], indent=1))


def _vocab(args: argparse.Namespace) -> None:
    from plmkit.core.tokenizers import train_tokenizer
    from plmkit.veco.tokenization import VecoTokenizer, add_language_tokens

    inputs = args.input or sorted(str(p) for p in (Path(args.data) / "corpus").glob("train.*.txt"))
    if not inputs:
        raise DataError(f"no corpus: {args.data}/corpus/train.*.txt is missing (run `plmkit veco prepare-data`), "
                        "or pass --input FILES")
    languages = _list(args.languages) if args.languages else [Path(p).suffixes[-2].lstrip(".") for p in inputs]
    train_tokenizer(inputs, args.out, vocab_size=args.vocab_size, model_type="unigram", special="xlmr",
                    character_coverage=args.character_coverage, input_sentence_size=args.input_sentence_size,
                    num_threads=args.num_threads, seed=args.seed, overwrite=args.overwrite)
    tokenizer = VecoTokenizer.from_pretrained(args.out)
    add_language_tokens(tokenizer, languages)
    tokenizer.save_pretrained(args.out)
    print(f"VECO vocabulary of {len(tokenizer)} tokens (languages {tokenizer.languages()}) on {', '.join(inputs)}: "
          f"{args.out}")


def _init_nlg(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForMaskedLM

    from plmkit.core.models import register_model_types
    from plmkit.veco.configuration import VecoConfig
    from plmkit.veco.modeling import VecoForConditionalGeneration
    from plmkit.veco.tokenization import VecoTokenizer

    register_model_types()
    if bool(args.model) == bool(args.config):
        raise ConfigError("give either --model (a pre-trained VECO) or --config (a random model) to init-nlg")
    tokenizer = VecoTokenizer.from_pretrained(args.tokenizer or args.model)
    try:
        tokenizer.src_lang, tokenizer.tgt_lang = args.src, args.tgt
    except KeyError as err:
        raise DataError(f"unknown language code: {err.args[0]}") from None
    start = tokenizer.language_id(args.tgt)
    keep = [int(i) for i in _list(args.keep_decoder_layers)] if args.keep_decoder_layers else None
    torch.manual_seed(args.seed)
    if args.model:
        pretrained = AutoModelForMaskedLM.from_pretrained(args.model)
        model = VecoForConditionalGeneration.from_pretraining(pretrained, keep, decoder_start_token_id=start)
    else:
        options = yaml.safe_load(args.config) or {}
        if not isinstance(options, dict):
            raise ConfigError(f"--config must be a mapping of VecoConfig options, got {args.config!r}")
        layers = options.pop("decoder_layers", len(keep) if keep else options.get("num_hidden_layers", 6))
        config = VecoConfig(**{"vocab_size": len(tokenizer), **options, "is_encoder_decoder": True,
                               "decoder_layers": layers, "decoder_start_token_id": start})
        model = VecoForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id = start
    model.generation_config.eos_token_id = start
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"VECO NLG model ({model.config.num_hidden_layers}+{model.config.decoder_layers} layers, decoder from "
          f"{model.config.keep_decoder_layers or 'random init'}; {args.src}->{args.tgt}, start/eos "
          f"{tokenizer.convert_ids_to_tokens(start)}): {args.out}")


def _load_any(path: str) -> Any:
    """A VECO model folder (or run folder) with the class its config names."""
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForMaskedLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
    )

    from plmkit.core.models import register_model_types

    register_model_types()
    config = AutoConfig.from_pretrained(path)
    arch = (getattr(config, "architectures", None) or [""])[0]
    if getattr(config, "is_encoder_decoder", False):
        cls = AutoModelForSeq2SeqLM
    elif "SequenceClassification" in arch:
        cls = AutoModelForSequenceClassification
    elif "PreTraining" in arch or "MaskedLM" in arch:
        cls = AutoModelForMaskedLM
    else:
        cls = AutoModel
    return cls.from_pretrained(path).eval()


def _export(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from plmkit.veco.export import export_plain
    from plmkit.veco.tokenization import VecoTokenizer

    model = _load_any(args.model)
    exported = export_plain(model)
    if exported is model:
        raise ConfigError(f"{args.model} ({type(model).__name__}, plug_in={model.config.plug_in}) has no plain "
                          "transformers form: a plug-in classifier reads [H; S]; only plug-out encoders (XLM-R) and "
                          "the NLG model (BART) export")
    out = Path(args.output_dir)
    exported.save_pretrained(out)
    try:
        tokenizer = VecoTokenizer.from_pretrained(args.model)
    except (OSError, ValueError):
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    if isinstance(tokenizer, VecoTokenizer):
        tokenizer.src_lang = tokenizer.tgt_lang = None  # saved as XLM-R's tokenizer (plain transformers loads it)
    tokenizer.save_pretrained(out)
    print(f"exported {type(model).__name__} as {type(exported).__name__}: {out}")


def _retrieve(args: argparse.Namespace) -> None:
    import torch

    from plmkit.core.training import auto_num_threads
    from plmkit.veco.evaluation import retrieval_precision_at_1
    from plmkit.veco.tokenization import VecoTokenizer

    torch.set_num_threads(args.num_threads or auto_num_threads())
    lines = Path(args.tsv).read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines[1:] if line.strip()]
    if any(len(r) != 2 for r in rows):
        raise DataError(f"{args.tsv}: expected source<TAB>target rows under a header")
    rows = rows[: args.max_samples] if args.max_samples else rows
    model = _load_any(args.model)
    tokenizer = VecoTokenizer.from_pretrained(args.model)
    tokenizer.src_lang = tokenizer.tgt_lang = None
    p = retrieval_precision_at_1(model, tokenizer, [r[0] for r in rows], [r[1] for r in rows], args.layer)
    print(json.dumps({"precision_at_1": p, "pairs": len(rows), "layer": args.layer}))


def _user_dir(args: argparse.Namespace) -> None:
    from plmkit.veco.fairseq import USER_DIR

    print(USER_DIR)


def _languages(args: argparse.Namespace) -> tuple[str, str]:
    if args.src and args.tgt:
        return args.src, args.tgt
    src, sep, tgt = Path(args.data).name.partition("-")
    if not sep:
        raise ConfigError(f"give --src and --tgt (the folder name {Path(args.data).name!r} is not SRC-TGT)")
    return args.src or src, args.tgt or tgt


def _export_fairseq_data(args: argparse.Namespace) -> None:
    from plmkit.veco.fairseq.convert import export_fairseq_data
    from plmkit.veco.tokenization import VecoTokenizer

    src, tgt = _languages(args)
    out = export_fairseq_data(args.data, VecoTokenizer.from_pretrained(args.tokenizer), src, tgt, args.out,
                              workers=args.workers)
    print(f"fairseq data-bin ({src}->{tgt}): {out}")


def _convert(args: argparse.Namespace) -> None:
    """A fairseq checkpoint (a file) -> a VECO NLG folder; a VECO NLG folder -> a fairseq checkpoint."""
    from plmkit.veco.fairseq.convert import from_fairseq, to_fairseq
    from plmkit.veco.modeling import VecoForConditionalGeneration
    from plmkit.veco.tokenization import VecoTokenizer

    source = Path(args.source)
    if source.is_file():
        if not args.tokenizer:
            raise ConfigError("converting a fairseq checkpoint needs --tokenizer (the vocabulary its dict.txt "
                              "was written from)")
        tokenizer = VecoTokenizer.from_pretrained(args.tokenizer)
        model = from_fairseq(source, tokenizer, args.data)
        model.save_pretrained(args.out)
        tokenizer.save_pretrained(args.out)
        print(f"fairseq {source} -> VecoForConditionalGeneration ({tokenizer.src_lang}->{tokenizer.tgt_lang}): "
              f"{args.out}")
        return
    model = _load_any(str(source))
    if not isinstance(model, VecoForConditionalGeneration):
        raise ConfigError(f"{source} is a {type(model).__name__}; only the NLG model (init-nlg, seq2seq runs) "
                          "converts to fairseq")
    path = to_fairseq(model, VecoTokenizer.from_pretrained(args.tokenizer or source), args.out, args.src, args.tgt)
    print(f"VecoForConditionalGeneration {source} -> fairseq: {path}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plmkit veco", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("prepare-data", help="fetch the Bible translations and write pairs and task files")
    p.add_argument("--out", required=True)
    p.add_argument("--pairs", default="de-en,fr-en,de-fr", help="parallel language pairs for pre-training")
    p.add_argument("--mono", default="en,de,fr", help="languages of the monolingual adjacent-verse segments")
    p.add_argument("--mt", default="de-en", help="translation directions to write for the seq2seq task")
    p.add_argument("--classify", default="en,de,fr", help="languages of the book-group classification task")
    p.add_argument("--translations", default=None, help="LANG=NAME,NAME;... (default en=web,kjv,bbe;de=elb;"
                                                        "fr=lsg,darby; the first is the parallel side)")
    p.add_argument("--max_pairs", type=int, default=None, help="keep a random subset of pre-training pairs")
    p.add_argument("--force", action="store_true", help="re-read the database even if cached")
    p.set_defaults(run=_prepare_data)
    v = sub.add_parser("vocab", help="train the joint SentencePiece vocabulary and add the language tokens")
    v.add_argument("--data", default=None, help="a prepare-data folder (its corpus/train.LANG.txt files)")
    v.add_argument("--input", nargs="*", default=None, help="corpus files instead of --data (train.LANG.txt)")
    v.add_argument("--languages", default=None, help="language tokens to add (default: from the corpus names)")
    v.add_argument("--out", required=True)
    v.add_argument("--vocab_size", type=int, default=16000)
    v.add_argument("--character_coverage", type=float, default=1.0)
    v.add_argument("--input_sentence_size", type=int, default=0)
    v.add_argument("--num_threads", type=int, default=None)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--overwrite", action="store_true")
    v.set_defaults(run=_vocab)
    n = sub.add_parser("init-nlg", help="build the encoder-decoder from a pre-trained VECO (or at random)")
    n.add_argument("--model", default=None, help="a pre-trained VECO (veco_pretrain run folder)")
    n.add_argument("--config", default=None, help="random init: VecoConfig options as a YAML mapping")
    n.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model's)")
    n.add_argument("--src", required=True, help="source language code (de)")
    n.add_argument("--tgt", required=True, help="target language code (en): decoding starts and stops at [tgt]")
    n.add_argument("--keep_decoder_layers", default=None, help="pre-trained layers that become the decoder "
                                                               "(default: the last min(6, L))")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--out", required=True)
    n.set_defaults(run=_init_nlg)
    e = sub.add_parser("export", help="a VECO folder as plain transformers XLM-R (plug-out) or BART (NLG)")
    e.add_argument("model")
    e.add_argument("--output_dir", required=True)
    e.set_defaults(run=_export)
    r = sub.add_parser("retrieve", help="zero-shot retrieval P@1 on an aligned source<TAB>target file")
    r.add_argument("--model", required=True)
    r.add_argument("--tsv", required=True)
    r.add_argument("--layer", type=int, default=None)
    r.add_argument("--max_samples", type=int, default=None)
    r.add_argument("--num_threads", type=int, default=None)
    r.set_defaults(run=_retrieve)
    u = sub.add_parser("fairseq-user-dir", help="print the folder to pass as fairseq's --user-dir")
    u.set_defaults(run=_user_dir)
    f = sub.add_parser("export-fairseq-data", help="a fairseq data-bin folder from SRC-TGT source<TAB>target files")
    f.add_argument("--data", required=True, help="a folder with train.tsv (and validation.tsv, test.tsv)")
    f.add_argument("--tokenizer", required=True, help="a VECO tokenizer folder (with the language tokens)")
    f.add_argument("--src", default=None, help="source language (default: from the folder name SRC-TGT)")
    f.add_argument("--tgt", default=None, help="target language (default: from the folder name SRC-TGT)")
    f.add_argument("--workers", type=int, default=1)
    f.add_argument("--out", required=True)
    f.set_defaults(run=_export_fairseq_data)
    c = sub.add_parser("convert", help="fairseq checkpoint (file) <-> VECO NLG model (folder)")
    c.add_argument("source", help="a fairseq checkpoint.pt, or a VecoForConditionalGeneration folder")
    c.add_argument("--out", required=True, help="the VECO folder, or the folder for checkpoint.pt + dict.*.txt")
    c.add_argument("--tokenizer", default=None, help="tokenizer folder (from fairseq: required; to fairseq: "
                                                     "default the model's)")
    c.add_argument("--data", default=None, help="from fairseq: the folder with dict.*.txt (default: the "
                                                "checkpoint's training data)")
    c.add_argument("--src", default=None, help="to fairseq: source language (default: the tokenizer's)")
    c.add_argument("--tgt", default=None, help="to fairseq: target language (default: the tokenizer's)")
    c.set_defaults(run=_convert)
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    args.run(args)
    return 0
