"""Images: reading files as RGB, the timm image encoder's arguments and grid features, and the image transform.

- `load_rgb(path)`: a PIL image in RGB. Transparent images (RGBA, LA, P with transparency; emoji PNGs) are
  composited onto a white background; other modes (L, 1, CMYK, I, F, YCbCr, ...) are converted with PIL. A missing
  or unreadable file raises `DataError` naming it.
- `timm_args(name, args, image_size)`: the keyword arguments `timm.create_model` gets: the user's, `num_classes=0`
  (no classifier head), `img_size=image_size` for models that take it (ViTs and other patch models), and a
  `pretrained_cfg_overlay` with `input_size=(3, image_size, image_size)` and `crop_pct=1.0`, so that timm's data
  config (`timm.data.resolve_data_config`, used by `plmkit.core.processors.image_transform`) resizes to the model's
  input size and crops nothing, for CNNs too.
- `grid_features(backbone, pixel_values)`: `forward_features` as a grid [B, h, w, C]: CNN maps (NCHW, or NHWC for
  models that say so, e.g. Swin) and ViT token sequences (prefix tokens dropped, the patches laid out on the patch
  grid).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plmkit.core.errors import ConfigError, DataError

__all__ = ["create_backbone", "grid_features", "image_transforms", "load_backbone", "load_rgb", "save_backbone",
           "timm_args"]

WHITE = (255, 255, 255)


def load_rgb(path: str | Path, background: tuple[int, int, int] = WHITE) -> Any:
    """The image at `path` as an RGB PIL image (transparent pixels composited onto `background`)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img, background, path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image file {path}: {type(err).__name__}: {err}") from None


def to_rgb(img: Any, background: tuple[int, int, int] = WHITE, name: Any = "image") -> Any:
    """`img` in RGB: alpha composited onto `background`, any other mode converted by PIL."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    try:
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = img.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (*background, 255))
            return Image.alpha_composite(canvas, rgba).convert("RGB")
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            # 16/32-bit grey: scale to 8 bits by the image's own range, then grey -> RGB
            import numpy as np

            arr = np.asarray(img, dtype=np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
            return Image.fromarray(arr.astype("uint8"), mode="L").convert("RGB")
        return img.convert("RGB")
    except (ValueError, OSError) as err:
        raise DataError(f"{name}: cannot convert an image of mode {img.mode!r} to RGB ({err})") from None


def _timm() -> Any:
    try:
        import timm
    except ImportError as err:  # pragma: no cover - timm is a dependency
        raise ConfigError("SemVLP needs timm and torchvision: pip install 'plmkit-core[vision]'") from err
    return timm


@functools.lru_cache(maxsize=64)
def _accepts_img_size(name: str, args_json: str) -> bool:
    timm = _timm()
    args = json.loads(args_json)
    try:
        with torch.device("meta"):
            timm.create_model(name, pretrained=False, img_size=8 * 4, **args)
    except TypeError:
        return False
    except RuntimeError as err:
        if "unknown model" in str(err).lower():
            raise ConfigError(f"timm has no model {name!r}") from None
        return True  # built, but something the meta device cannot do: it took img_size
    except Exception:  # noqa: BLE001 - a model that accepts img_size but not 32 px (e.g. window sizes)
        return True
    return True


def timm_args(name: str, args: dict[str, Any] | None, image_size: int) -> dict[str, Any]:
    """The arguments `timm.create_model(name, pretrained=False, **...)` gets (see the module docstring)."""
    timm = _timm()
    if not timm.is_model(name):
        raise ConfigError(f"timm has no model {name!r} (see timm.list_models())")
    args = dict(args or {})
    out: dict[str, Any] = {"num_classes": 0, **args}
    if "img_size" not in args and _accepts_img_size(name, json.dumps(args, sort_keys=True)):
        out["img_size"] = image_size
    overlay = dict(args.get("pretrained_cfg_overlay") or {})
    overlay.setdefault("input_size", [3, image_size, image_size])
    overlay.setdefault("crop_pct", 1.0)
    out["pretrained_cfg_overlay"] = overlay
    return out


def create_backbone(name: str, args: dict[str, Any] | None, image_size: int) -> nn.Module:
    """A randomly initialised timm model (never downloads weights)."""
    timm = _timm()
    try:
        return timm.create_model(name, pretrained=False, **timm_args(name, args, image_size))
    except TypeError as err:
        raise ConfigError(f"timm model {name!r} does not take the arguments {args}: {err}") from None


def save_backbone(backbone: nn.Module, path: str | Path) -> Path:
    """Write a timm backbone's weights (safetensors), to warm-start another model's image encoder."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}, str(path))
    return path


def load_backbone(backbone: nn.Module, path: str | Path) -> None:
    """Load `save_backbone`'s file into `backbone`; every tensor must be there with the same shape."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"image encoder weights {str(path)!r}: no such file")
    weights = load_file(str(path))
    target = backbone.state_dict()
    missing = sorted(set(target) - set(weights))
    unexpected = sorted(set(weights) - set(target))
    wrong = sorted(k for k in set(target) & set(weights) if target[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        raise ConfigError(f"image encoder weights {str(path)!r} do not fit this timm model: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}, other shapes {wrong[:3]}")
    backbone.load_state_dict(weights)


def grid_features(backbone: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """`backbone.forward_features(pixel_values)` as a grid [B, h, w, C]."""
    x = backbone.forward_features(pixel_values)
    if isinstance(x, (tuple, list)):
        x = x[0]
    if x.dim() == 4:
        fmt = getattr(backbone, "output_fmt", "NCHW")
        if str(getattr(fmt, "value", fmt)) == "NHWC":
            return x
        return x.permute(0, 2, 3, 1)
    if x.dim() == 3:
        tokens = x[:, int(getattr(backbone, "num_prefix_tokens", 0) or 0):]
        n = tokens.shape[1]
        grid = getattr(getattr(backbone, "patch_embed", None), "grid_size", None)
        if grid is not None and math.prod(grid) == n:
            h, w = int(grid[0]), int(grid[1])
        else:
            h = w = math.isqrt(n)
            if h * w != n:
                raise ConfigError(f"{type(backbone).__name__}: cannot lay {n} tokens out on a square grid")
        return tokens.reshape(tokens.shape[0], h, w, tokens.shape[-1])
    raise ConfigError(f"{type(backbone).__name__}.forward_features returned a {x.dim()}-d tensor; expected a feature "
                      f"map [B, C, H, W] or a token sequence [B, N, C]")


def image_transforms(timm_model_name: str, args: dict[str, Any]) -> tuple[Any, Any]:
    """(training, evaluation) transforms of timm's data config for the model (`plmkit.core.processors`)."""
    from plmkit.core.processors import image_transform

    return image_transform(timm_model_name, True, **args), image_transform(timm_model_name, False, **args)
