"""Tiny SemVLP models and tiny image-text data sets, built in code (nothing downloaded), for tests and for trying the
package out: coloured shapes (8 colours x 3 shapes) captioned "a red square", saved as PNGs of several modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from plmkit.vlp.configuration import SemVLPConfig

__all__ = ["RESNET", "TINY", "VIT", "contract_kit", "data_flags", "draw", "pairs", "tiny_config", "tiny_folder",
           "write_image_text"]

COLORS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (240, 220, 30),
          "black": (10, 10, 10), "pink": (250, 120, 200), "brown": (120, 70, 20), "grey": (128, 128, 128)}
SHAPES = ("square", "bar", "dot")
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, codebook_size=8)
RESNET = dict(timm_model_name="test_resnet", image_size=64)
VIT = dict(timm_model_name="test_vit", image_size=32)


def tiny_config(encoder: dict | None = None, **overrides) -> SemVLPConfig:
    return SemVLPConfig(**{"vocab_size": 200, "cross_attention_layers": 1, **TINY, **(encoder or RESNET), **overrides})


def draw(color: str, shape: str, size: int = 32, mode: str = "RGBA"):
    """A `color` `shape` on a transparent (RGBA) or white background."""
    from PIL import Image

    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    if mode != "RGBA":
        rgba[...] = 255
    q = size // 4
    region = {"square": (slice(q, 3 * q), slice(q, 3 * q)), "bar": (slice(0, size), slice(q + q // 2, 2 * q + q // 2)),
              "dot": (slice(q + q // 2, 2 * q + q // 2), slice(q + q // 2, 2 * q + q // 2))}[shape]
    rgba[region[0], region[1], :3] = COLORS[color]
    rgba[region[0], region[1], 3] = 255
    img = Image.fromarray(rgba, mode="RGBA")
    return img if mode == "RGBA" else img.convert(mode)


def pairs() -> list[tuple[str, str, str]]:
    """(color, shape, caption) for every color and shape."""
    return [(c, s, f"a {c} {s}") for c in COLORS for s in SHAPES]


def write_image_text(folder: Path, fmt: str = "jsonl", n_val: int = 6, n_test: int = 6) -> dict[str, Path]:
    """Image files (RGBA, L and P modes among them) and train/validation/test files with relative image paths."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "img").mkdir(exist_ok=True)
    rows = []
    modes = ("RGBA", "RGB", "L", "P")
    for i, (color, shape, text) in enumerate(pairs()):
        name = f"img/{color}_{shape}.png"
        draw(color, shape, mode=modes[i % len(modes)]).save(folder / name)
        rows.append({"image": name, "text": text, "label": shape})
    order = np.random.default_rng(0).permutation(len(rows))
    splits = {"test": order[:n_test], "validation": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    paths = {}
    for split, index in splits.items():
        path = folder / f"{split}.{fmt}"
        chosen = [rows[i] for i in index]
        if fmt == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in chosen))
        else:
            path.write_text("image,text,label\n" + "".join(f"{r['image']},{r['text']},{r['label']}\n" for r in chosen))
        paths[split] = path
    return paths


def data_flags(paths: dict[str, Path]) -> list[str]:
    return [flag for split, path in paths.items() for flag in (f"--{split}_file", str(path))]


def tiny_folder(folder: Path, encoder: dict | None = None, seed: int = 0, **overrides) -> Path:
    """A tiny SemVLP pre-training model (tiny-bert's WordPiece) and its processor, saved to `folder`."""
    from plmkit.vlp.commands import build_model

    options = {**TINY, **(encoder or RESNET), "cross_attention_layers": 1, **overrides}
    model, processor = build_model(None, options.pop("timm_model_name"), options.pop("image_size"), seed,
                                   tokenizer="tiny-bert", **options)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _contract_batch(processor) -> dict:
    import torch

    enc = dict(processor(["a red square", "a blue dot", "a grey bar"], padding=True, return_tensors="pt"))
    return {**enc, "pixel_values": torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))}


def contract_kit():
    """The contract kit's `TaskKit` for the image_text task: the coloured shapes (8 validation and 8 test pairs), a
    tiny SemVLP folder (test_resnet) as the model, a batch of three captions with pixels; the task's matching loss
    and accuracy are the metrics compared on resume and across 2 processes."""
    from plmkit.core.testing.contract import TaskKit

    return TaskKit(
        write_data=lambda folder: data_flags(write_image_text(folder, n_val=8, n_test=8)),
        flags=("--task", "image_text"),
        resume_metrics=("eval_loss", "test_loss", "test_accuracy"),
        ddp_metrics=("eval_loss", "eval_accuracy", "test_loss", "test_accuracy"),
        auto_class="AutoModelForPreTraining",
        model_kind="masked-lm",
        num_labels=None,
        batch=_contract_batch,
        build_model=lambda folder: str(tiny_folder(folder)),
    )
