"""The dual-encoder contrastive baseline of the reproduction: a random-init timm image encoder trained into a frozen
text encoder's sentence space with a symmetric InfoNCE loss (CLIP's, Radford et al. 2021), no cross-modal layers.

- text: the frozen text model (default MiniLM, all-MiniLM-L6-v2) mean-pooled over tokens, as sentence-transformers
  trained it; computed once per caption;
- image: the timm encoder's grid features averaged, a linear map to the text width; both L2-normalised;
- loss: (CE(s V T^T, diag) + CE(s T V^T, diag)) / 2 with a learned scale s = exp(t), t initialised at log(1/0.07)
  and clamped at log(100), as CLIP;
- retrieval: cosine scores over the whole split, recall@K with `plmkit.vlp.retrieval.recall_at_k`.

`train_dual_encoder` trains it with the same data, image transform, batch size, step count and AdamW/linear schedule
as the SemVLP arms of the benchmark, so the budget is the same. `train_tower` trains it once into a folder and keeps
the weights with their metrics: the "tower" a SemVLP model's image encoder can start from (`plmkit vlp init
--image_encoder_from`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.vlp.images import (
    create_backbone,
    grid_features,
    image_transforms,
    load_rgb,
    save_backbone,
    timm_args,
)
from plmkit.vlp.retrieval import recall_at_k

__all__ = ["DualEncoder", "clip_loss", "train_dual_encoder", "train_tower"]


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matched (image, text) rows (both L2-normalised)."""
    logits = scale * image @ text.t()
    target = torch.arange(len(image), device=image.device)
    return (F.cross_entropy(logits.float(), target) + F.cross_entropy(logits.t().float(), target)) / 2


class DualEncoder(nn.Module):
    """A timm image tower mapped into a frozen text encoder's embedding space."""

    def __init__(self, timm_model_name: str, image_size: int, text_dim: int,
                 timm_model_args: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = create_backbone(timm_model_name, timm_model_args, image_size)
        self.projection = nn.Linear(int(self.backbone.num_features), text_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        grid = grid_features(self.backbone, pixel_values)
        return F.normalize(self.projection(grid.mean(dim=(1, 2))), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(100)).exp()


@torch.no_grad()
def text_embeddings(texts: list[str], text_model: str = "minilm", max_length: int = 32, batch_size: int = 128,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings of the frozen text model."""
    from plmkit.core.losses import pool
    from plmkit.core.models import load_model

    model, tokenizer = load_model(text_model, kind="base")
    model.to(device).eval()
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt").to(device)
        hidden = model(**enc).last_hidden_state
        out.append(F.normalize(pool(hidden, enc["attention_mask"], "mean"), dim=-1))
    return torch.cat(out)


def train_dual_encoder(train: list[dict[str, Any]], test: list[dict[str, Any]], timm_model_name: str, image_size: int,
                       steps: int, batch_size: int, learning_rate: float, seed: int,
                       timm_model_args: dict[str, Any] | None = None, text_model: str = "minilm",
                       max_length: int = 32, warmup_ratio: float = 0.1, weight_decay: float = 0.01,
                       device: str | torch.device = "cpu", save_to: str | Path | None = None,
                       num_threads: int | None = None) -> dict[str, float]:
    """Train on `train` rows (`image` path, `text`) and return retrieval metrics on `test` (whole split):
    `emb_t2i_r{1,5,10}`, `emb_i2t_r{1,5,10}`, and `train_seconds`. `save_to`: also write the trained timm
    backbone's weights there (safetensors), for `plmkit vlp init --image_encoder_from`. `num_threads`: torch's CPU
    threads for the process, as `plmkit train` sets them (default: `PLMKIT_NUM_THREADS`, else the cores the load
    average leaves free)."""
    from transformers import get_linear_schedule_with_warmup

    from plmkit.core.training import auto_num_threads

    torch.set_num_threads(num_threads or auto_num_threads())
    torch.manual_seed(seed)
    args = timm_args(timm_model_name, timm_model_args, image_size)
    _, transform = image_transforms(timm_model_name, args)
    pixels = {p: transform(load_rgb(p)) for p in dict.fromkeys(r["image"] for r in train + test)}
    text_train = text_embeddings([r["text"] for r in train], text_model, max_length, device=device)
    model = DualEncoder(timm_model_name, image_size, text_train.shape[1], timm_model_args).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if p.dim() <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                                  lr=learning_rate)
    schedule = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * steps), steps)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(train), generator=gen).tolist()
        index, order = order[:batch_size], order[batch_size:]
        images = torch.stack([pixels[train[i]["image"]] for i in index]).to(device)
        loss = clip_loss(model.encode_image(images), text_train[index], model.scale())
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        paths = list(dict.fromkeys(r["image"] for r in test))
        where = {p: i for i, p in enumerate(paths)}
        image_vecs = torch.cat([model.encode_image(torch.stack([pixels[p] for p in paths[i : i + 128]]).to(device))
                                for i in range(0, len(paths), 128)])
        text_test = text_embeddings([r["text"] for r in test], text_model, max_length, device=device)
        scores = text_test @ image_vecs.t()
    metrics = {f"emb_{k}": v for k, v in recall_at_k(scores, [where[r["image"]] for r in test]).items()}
    if save_to is not None:
        save_backbone(model.backbone, save_to)
    return {**metrics, "train_seconds": round(seconds, 1)}


def train_tower(folder: str | Path, splits: dict[str, list[dict[str, Any]]], timm_model_name: str, image_size: int = 64,
                steps: int = 1500, batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 1,
                text_model: str = "minilm", num_threads: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Train the dual encoder on `splits["train"]` once and keep its timm backbone in `folder/tower-{steps}.safetensors`
    with `tower-{steps}.json` beside it (the recipe and the retrieval metrics on `splits["test"]`). A folder that
    already holds the tower is reused, without training; one that holds another encoder's tower is an error. Returns the
    weights file and the metrics."""
    folder = Path(folder)
    weights, meta = folder / f"tower-{steps}.safetensors", folder / f"tower-{steps}.json"
    if weights.exists() and meta.exists():
        metrics = json.loads(meta.read_text())
        if metrics.get("encoder", timm_model_name) != timm_model_name:
            raise ValueError(f"{weights} is a {metrics['encoder']} tower, not {timm_model_name}: give another folder")
        return weights, metrics
    folder.mkdir(parents=True, exist_ok=True)
    metrics = train_dual_encoder(splits["train"], splits["test"], timm_model_name, image_size, steps, batch_size,
                                 learning_rate, seed, text_model=text_model, max_length=32, save_to=weights,
                                 num_threads=num_threads)
    metrics = {"encoder": timm_model_name, "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate,
               "seed": seed, **metrics}
    meta.write_text(json.dumps(metrics))  # written last: weights without it are trained again
    return weights, metrics
