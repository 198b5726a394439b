"""`plmkit vlp ...` (entry-point group `plmkit.commands`, name `vlp`).

    plmkit vlp prepare-data [emoji] [--force]        fetch, check and cache the emoji builtin
    plmkit vlp init --output_dir DIR [--text minilm] [--timm resnet18] [--image_size 64] [--seed 0]
                    [--image_encoder_from FILE] [--set KEY=VALUE ...]
                                                      a SemVLP model to pre-train: MiniLM's trunk (or --text none: a
                                                      random one), a timm encoder (random, or the weights in FILE),
                                                      its processor
    plmkit vlp retrieve RUN_DIR --query TEXT [--top 5] [--split test] [--mode single]   the images a caption finds
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from plmkit.core.errors import ConfigError

__all__ = ["build_model", "main", "rank_images"]


def _options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def build_model(text: str | None, timm_model_name: str, image_size: int, seed: int = 0,
                image_encoder_from: str | Path | None = None, **options: Any) -> tuple[Any, Any]:
    """(SemVLPForPreTraining, TextImageProcessor): the trunk from `text` (a BERT-shaped model; None: random, with
    MiniLM's tokenizer and shape unless `options` say otherwise), a random `timm_model_name` encoder, or the weights
    in `image_encoder_from` (a `save_backbone` file, e.g. the dual encoder's trained tower)."""
    import torch

    from plmkit.core.models import load_tokenizer
    from plmkit.core.processors import TextImageProcessor
    from plmkit.vlp.configuration import SemVLPConfig
    from plmkit.vlp.images import timm_args
    from plmkit.vlp.modeling import SemVLPForPreTraining

    options = {"timm_model_name": timm_model_name, "image_size": image_size, **options}
    if text:
        model, tokenizer = SemVLPForPreTraining.from_text_model(text, seed=seed, **options)
    else:
        tokenizer = load_tokenizer(options.pop("tokenizer", "minilm"))
        options.setdefault("vocab_size", len(tokenizer))
        options.setdefault("pad_token_id", tokenizer.pad_token_id)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SemVLPForPreTraining(SemVLPConfig(**options))
    if image_encoder_from:
        from plmkit.vlp.images import load_backbone

        load_backbone(model.base_model.image_encoder.backbone, image_encoder_from)
    config = model.config
    processor = TextImageProcessor(tokenizer, config.timm_model_name,
                                   timm_args(config.timm_model_name, config.timm_model_args, config.image_size))
    return model, processor


def _prepare(args: argparse.Namespace) -> None:
    from plmkit.vlp.data import BUILTIN, prepare_emoji

    for name in args.names or list(BUILTIN):
        if name not in BUILTIN:
            raise ConfigError(f"unknown image-text dataset {name!r}; known: {sorted(BUILTIN)}")
        print(f"{name}: {prepare_emoji(force=args.force)}")


def _init(args: argparse.Namespace) -> None:
    options = _options(args.set)
    model, processor = build_model(None if args.text in ("", "none") else args.text, args.timm, args.image_size,
                                   args.seed, args.image_encoder_from, **options)
    out = Path(args.output_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    print(json.dumps({"output_dir": str(out), "parameters": sum(p.numel() for p in model.parameters()),
                      "timm_model_name": model.config.timm_model_name, "image_size": model.config.image_size,
                      "visual_feature_dim": model.config.visual_feature_dim}))


def rank_images(run_dir: str | Path, queries: list[str], split: str = "test", mode: str | None = None,
                top: int = 5) -> list[list[dict[str, Any]]]:
    """For each query, the `top` images of the run's `split` (its builtin or its files) that the matching head
    scores highest in `mode` (default: the model's `default_mode`): [{"image": path, "score": log-odds}, ...]."""
    import torch

    from plmkit.core.processors import text_tokenizer
    from plmkit.core.run import load_run
    from plmkit.vlp.data import load_builtin_pairs, read_pairs
    from plmkit.vlp.images import image_transforms, load_rgb, timm_args
    from plmkit.vlp.retrieval import score_matching

    model, processor, _, cfg = load_run(run_dir)
    model.eval()
    tokenizer = text_tokenizer(processor)
    if cfg.data.data:
        rows = load_builtin_pairs(cfg.data.data)[split]
    else:
        files = {"train": cfg.data.train_file, "validation": cfg.data.validation_file, "test": cfg.data.test_file}
        if not files.get(split):
            raise ConfigError(f"the run has no {split} split (its data: {files})")
        rows = read_pairs(files[split], split=split)
    paths = list(dict.fromkeys(r["image"] for r in rows))
    c = model.config
    _, transform = image_transforms(c.timm_model_name, timm_args(c.timm_model_name, c.timm_model_args, c.image_size))
    with torch.no_grad():
        grids = torch.cat([model.semvlp.image_features(torch.stack([transform(load_rgb(p)) for p in paths[i : i + 64]]))
                           for i in range(0, len(paths), 64)])
        texts = dict(tokenizer(queries, truncation=True, max_length=cfg.model.max_length, padding=True,
                               return_tensors="pt"))
        scores = score_matching(model, texts, grids, mode or c.default_mode)
    found = []
    for row in scores:
        best = row.argsort(descending=True)[:top].tolist()
        found.append([{"image": paths[i], "score": round(float(row[i]), 4)} for i in best])
    return found


def _retrieve(args: argparse.Namespace) -> None:
    found = rank_images(args.run_dir, [args.query], args.split, args.mode, args.top)[0]
    print(json.dumps(found, indent=1))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="plmkit vlp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare-data", help="fetch, check and cache image-text builtin datasets (emoji)")
    prep.add_argument("names", nargs="*", help="datasets (default: all)")
    prep.add_argument("--force", action="store_true", help="rebuild even if cached")
    init = sub.add_parser("init", help="write a SemVLP model folder to pre-train")
    init.add_argument("--output_dir", required=True)
    init.add_argument("--text", default="minilm", help="BERT-shaped text model for the trunk (alias, folder), or none")
    init.add_argument("--timm", default="resnet18", help="timm model name of the image encoder (random init)")
    init.add_argument("--image_size", type=int, default=64)
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--image_encoder_from", default=None, metavar="FILE",
                      help="start the timm encoder from these weights (safetensors of the backbone, as the dual "
                           "encoder's save_to writes) instead of random")
    init.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                      help="SemVLPConfig options, e.g. cross_attention_layers=2 region_grid=4 codebook_size=64")
    ret = sub.add_parser("retrieve", help="the images of a run's split that a caption matches best")
    ret.add_argument("run_dir")
    ret.add_argument("--query", required=True)
    ret.add_argument("--top", type=int, default=5)
    ret.add_argument("--split", default="test")
    ret.add_argument("--mode", choices=("single", "two"), default=None)
    args = parser.parse_args(argv)
    {"prepare-data": _prepare, "init": _init, "retrieve": _retrieve}[args.command](args)
    return 0
