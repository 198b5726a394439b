"""Processors: what turns raw inputs into model inputs, for models that read text and images.

`load_model` returns a processor next to the model: the tokenizer for text models; for a folder that holds an image
part as well, a transformers processor (`AutoProcessor`, with `.tokenizer` and `.image_processor`) or a
`TextImageProcessor` (a tokenizer and a timm image transform, for a model whose image tower is a timm model).
`text_tokenizer(processor)` gives the tokenizer of any of them.

`image_transform(timm_model_name, training)` is timm's own preprocessing for that model (resize, crop,
normalisation with the model's mean and std; random resized crop, flip and colour jitter for training), resolved
from a model created with `pretrained=False`: nothing is downloaded. It needs the `vision` extra
(`pip install 'plmkit-core[vision]'`: timm and torchvision).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from plmkit.core.errors import ConfigError

__all__ = ["TextImageProcessor", "image_data_config", "image_transform", "text_tokenizer"]


def text_tokenizer(processor: Any) -> PreTrainedTokenizerBase:
    """The tokenizer of a processor (`processor.tokenizer`), or the processor itself when it is a tokenizer."""
    return getattr(processor, "tokenizer", None) or processor


def _timm() -> Any:
    try:
        import timm
    except ImportError as err:
        raise ConfigError(
            "image transforms need timm and torchvision: pip install 'plmkit-core[vision]'"
        ) from err
    return timm


def _create_unloaded(timm_model_name: str, model_args: dict[str, Any]) -> torch.nn.Module:
    """The timm model with random weights, on the meta device when it can be (no memory, no download)."""
    timm = _timm()
    try:
        with torch.device("meta"):
            return timm.create_model(timm_model_name, pretrained=False, **model_args)
    except RuntimeError as err:
        if "unknown model" in str(err).lower():
            raise ConfigError(f"timm has no model {timm_model_name!r}") from err
        # Some models compute something at construction that the meta device cannot: build them on the CPU.
        return timm.create_model(timm_model_name, pretrained=False, **model_args)


def image_data_config(timm_model_name: str, **model_args: Any) -> dict[str, Any]:
    """timm's data config (input_size, interpolation, mean, std, crop_pct, crop_mode) of `timm_model_name` created
    with `model_args` (e.g. `img_size=32`): `timm.data.resolve_data_config` of the model, with input_size following
    an `img_size` given in `model_args` (timm keeps the pretrained config's size there)."""
    timm = _timm()
    model = _create_unloaded(timm_model_name, dict(model_args))
    args: dict[str, Any] = {}
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if "img_size" in model_args and img_size is not None:
        channels = model.pretrained_cfg.get("input_size", (3,))[0] if getattr(model, "pretrained_cfg", None) else 3
        args["input_size"] = (model_args.get("in_chans", channels), *tuple(img_size))
    return dict(timm.data.resolve_data_config(args, model=model))


def image_transform(timm_model_name: str, training: bool, **model_args: Any) -> Callable[[Any], torch.Tensor]:
    """timm's transform for `timm_model_name` (a PIL image in, a [C, H, W] float tensor out): training
    augmentation when `training`, else resize + centre crop; see `image_data_config`."""
    timm = _timm()
    config = image_data_config(timm_model_name, **model_args)
    return timm.data.create_transform(**config, is_training=training)


class TextImageProcessor:
    """A tokenizer and a timm image transform as one processor.

    `processor(text=..., images=..., training=False, **tokenizer_kwargs)` returns the tokenizer's encoding plus
    `pixel_values` [N, C, H, W] (images: PIL images, converted to RGB). Anything else (`pad`, `pad_token_id`,
    `decode`, `len(...)`) is the tokenizer's, so text-only code can use it as the tokenizer. `save_pretrained(folder)`
    writes the tokenizer and `plmkit_processor.json` (the timm model name and arguments); `load_model(folder)` and
    `TextImageProcessor.from_pretrained(folder)` load it back.
    """

    config_name = "plmkit_processor.json"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, timm_model_name: str,
                 model_args: dict[str, Any] | None = None) -> None:
        self.tokenizer = tokenizer
        self.timm_model_name = timm_model_name
        self.model_args = dict(model_args or {})
        self.train_transform = image_transform(timm_model_name, training=True, **self.model_args)
        self.eval_transform = image_transform(timm_model_name, training=False, **self.model_args)

    def __call__(self, text: Any = None, images: Any = None, training: bool = False, **kwargs: Any) -> BatchEncoding:
        if text is None and images is None:
            raise ValueError("TextImageProcessor needs text, images or both")
        encoding = self.tokenizer(text, **kwargs) if text is not None else BatchEncoding()
        if images is not None:
            transform = self.train_transform if training else self.eval_transform
            single = not isinstance(images, Iterable) or hasattr(images, "convert")
            batch = [images] if single else list(images)
            pixels = torch.stack([transform(img.convert("RGB") if hasattr(img, "convert") else img) for img in batch])
            encoding["pixel_values"] = pixels
        return encoding

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes the processor lacks; guard the ones unpickling looks up before __init__ ran.
        if name.startswith("__") or name in ("tokenizer", "timm_model_name", "model_args"):
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __repr__(self) -> str:
        return (f"TextImageProcessor(tokenizer={type(self.tokenizer).__name__}, timm_model={self.timm_model_name!r}, "
                f"model_args={self.model_args})")

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> tuple[str, ...]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = tuple(self.tokenizer.save_pretrained(str(folder), **kwargs))
        config = {"processor_class": type(self).__name__, "timm_model_name": self.timm_model_name,
                  "model_args": self.model_args}
        (folder / self.config_name).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return (*files, str(folder / self.config_name))

    @classmethod
    def from_pretrained(cls, folder: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> TextImageProcessor:
        """Load a saved processor; `tokenizer` replaces the saved tokenizer."""
        folder = Path(folder)
        config = json.loads((folder / cls.config_name).read_text(encoding="utf-8"))
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(str(folder))
        return cls(tokenizer, config["timm_model_name"], config.get("model_args") or {})
