"""``SemVLPMethod``: SemVLP's pre-training (Li et al., 2021) on the core's Method hooks, with the `image_text` task.

    plmkit train --task image_text --data emoji --model_name_or_path DIR --method semvlp \\
        --method.mode_schedule alternate --method.two_stream_ratio 0.5

The task gives the image-text matching loss (ITM: a caption swapped for another image's with probability 0.5, on the
pooled [CLS]); the method adds the other objectives of the paper's set (L = L_MLM + L_MOP + L_ITM + L_QA, Sec. 3.3,
following LXMERT), each a logged loss term:
- `mlm`: BERT's 80/10/10 corruption of `mlm_probability` of the caption tokens (`plmkit.core.losses.mask_examples`,
  each caption on its own tokens; special tokens and padding never chosen), cross-entropy at the chosen positions;
- `visual_regression`: `visual_mask_probability` of the image tokens have their grid feature zeroed at the input;
  the model regresses the feature of a frozen copy of the image encoder (the encoder as it was when training
  started), layer-normalised per token, with mean squared error at the masked tokens (the L2 feature loss of LXMERT's
  masked object prediction, whose targets are a fixed detector's features);
- `visual_codebook`: the same masked tokens are classified into the nearest of `codebook_size` (model config) k-means
  centroids of those normalised frozen features over the training images, a stand-in for the detector's object
  labels (LXMERT's 1,600 Visual Genome classes): a documented deviation, the images have no region labels;
- `qa`: answer classification on matched pairs whose caption is a question, when the data has answers.
Losses are means over the predicted positions, so LXMERT's 1/0.15 weighting (it averages over all regions) is not
needed. Every objective runs in both modes, on matched and mismatched pairs alike (as LXMERT; QA on matched pairs).

Mode schedule (Sec. 3.2, "pre-trained iteratively"): `alternate` makes optimizer step s two-stream when
floor((s + 1) r) > floor(s r) with r = `two_stream_ratio` (r = 0.5: single, two, single, ...; every micro-batch of an
accumulated step shares its mode), `single` and `two` use one mode throughout. The mode is a forward argument
(`batch["mode"]`), so evaluation uses the task's mode.

Randomness: masks are drawn per example from a generator seeded with (run seed, optimizer step, example id), so they
do not depend on batch composition, process count or resumption. State (saved in checkpoints): the frozen encoder and
the centroids, so a resumed run keeps the targets it started with.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plmkit.core.losses import mask_examples
from plmkit.core.processors import text_tokenizer
from plmkit.core.testing.contract import ContractCase
from plmkit.core.training import Method, MethodConfig, MethodContext, MethodError
from plmkit.vlp.configuration import MODES

__all__ = ["CONTRACT_CASE", "SemVLPMethod", "SemVLPMethodConfig", "kmeans", "mode_at_step"]

logger = logging.getLogger(__name__)

SCHEDULES = ("alternate", *MODES)
TARGET_PREFIX = "target_encoder."
CENTROIDS = "centroids"

# The method's case for the contract kit, on the image_text task (its kit, `plmkit.vlp.testing.contract_kit`, builds
# a tiny SemVLP folder and the coloured-shapes data); the root tests/test_contract.py runs it with every method.
CONTRACT_CASE = ContractCase("semvlp", {"codebook_samples": 64, "kmeans_iterations": 3}, task="image_text",
                             exports=None, extra_passes=True, trec_defaults=False)


@dataclass
class SemVLPMethodConfig(MethodConfig):
    """SemVLP pre-training: MLM, masked visual feature regression and codebook classification, QA (when answers are
    given) on top of the image_text task's matching loss, alternating single- and two-stream steps."""

    mode_schedule: str = field(default="alternate", metadata={
        "help": "alternate: two-stream on a two_stream_ratio share of the steps, single-stream on the others; "
                "single / two: one mode throughout", "choices": SCHEDULES})
    two_stream_ratio: float = field(default=0.5, metadata={"help": "share of two-stream steps under alternate"})
    mlm_probability: float = field(default=0.15, metadata={"help": "share of caption tokens masked (BERT 80/10/10)"})
    visual_mask_probability: float = field(default=0.15, metadata={"help": "share of image tokens masked"})
    itm_weight: float = field(default=1.0, metadata={"help": "weight of the task's image-text matching loss"})
    mlm_weight: float = field(default=1.0, metadata={"help": "weight of the masked-LM term"})
    visual_regression_weight: float = field(default=1.0, metadata={"help": "weight of the feature regression term"})
    visual_codebook_weight: float = field(default=1.0, metadata={"help": "weight of the codebook classification term"})
    qa_weight: float = field(default=1.0, metadata={"help": "weight of the QA term (data with answers only)"})
    codebook_samples: int = field(default=20000, metadata={
        "help": "at most this many image-token features (a seeded sample) are clustered for the codebook"})
    kmeans_iterations: int = field(default=20, metadata={"help": "Lloyd iterations of the codebook's k-means"})
    image_encoder_learning_rate: float | None = field(default=None, metadata={
        "help": "learning rate of the timm image encoder (default: --learning_rate), e.g. higher when it starts random"})

    def validate(self) -> None:
        for name in ("two_stream_ratio", "mlm_probability", "visual_mask_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise MethodError(f"{name} must be in [0, 1], got {value}")
        for name in ("itm_weight", "mlm_weight", "visual_regression_weight", "visual_codebook_weight", "qa_weight"):
            if getattr(self, name) < 0:
                raise MethodError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.codebook_samples < 2:
            raise MethodError(f"codebook_samples must be >= 2, got {self.codebook_samples}")
        if self.kmeans_iterations < 1:
            raise MethodError(f"kmeans_iterations must be >= 1, got {self.kmeans_iterations}")
        if self.image_encoder_learning_rate is not None and self.image_encoder_learning_rate <= 0:
            raise MethodError(f"image_encoder_learning_rate must be > 0, got {self.image_encoder_learning_rate}")


def mode_at_step(step: int, schedule: str, ratio: float) -> str:
    """The mode of optimizer step `step` (0-based) under `schedule` (see the module docstring)."""
    if schedule in MODES:
        return schedule
    return "two" if int(np.floor((step + 1) * ratio + 1e-9)) > int(np.floor(step * ratio + 1e-9)) else "single"


def kmeans(points: torch.Tensor, k: int, iterations: int, seed: int) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding (a generator seeded with `seed`); returns the centroids [k, D]. An
    emptied cluster is re-seeded with the point farthest from its centroid."""
    points = points.float()
    if len(points) < k:
        raise MethodError(f"the codebook needs at least codebook_size={k} image-token features, got {len(points)}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    cpu = points.cpu()
    centroids = [cpu[int(torch.randint(len(cpu), (1,), generator=gen))]]
    dist = ((cpu - centroids[0]) ** 2).sum(1)
    for _ in range(1, k):
        probs = dist / dist.sum() if float(dist.sum()) > 0 else torch.full_like(dist, 1.0 / len(dist))
        nxt = cpu[int(torch.multinomial(probs, 1, generator=gen))]
        centroids.append(nxt)
        dist = torch.minimum(dist, ((cpu - nxt) ** 2).sum(1))
    c = torch.stack(centroids).to(points.device)
    for _ in range(iterations):
        assign = torch.cdist(points, c).argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k).to(points.dtype)
        empty = counts == 0
        c = torch.where(empty[:, None], c, sums / counts.clamp_min(1)[:, None])
        if empty.any():
            far = torch.cdist(points, c).min(1).values.argsort(descending=True)
            c[empty] = points[far[: int(empty.sum())]]
    return c


def normalise(features: torch.Tensor) -> torch.Tensor:
    """The regression target of a grid feature: layer-normalised per token, no affine."""
    return F.layer_norm(features.float(), features.shape[-1:])


def _example_seed(seed: int, step: int, example: int) -> int:
    return int(np.random.SeedSequence([seed, step, example]).generate_state(1)[0])


def _unwrap(model: nn.Module) -> nn.Module:
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def _semvlp(model: nn.Module) -> nn.Module:
    core = getattr(_unwrap(model), "semvlp", None)
    if core is None:
        raise MethodError(f"method semvlp needs a SemVLP model (SemVLPForPreTraining); got {type(_unwrap(model)).__name__}")
    return core


class SemVLPMethod(Method):
    """SemVLP pre-training objectives and the single/two-stream schedule (see the module docstring)."""

    name = "semvlp"
    config_class = SemVLPMethodConfig
    config: SemVLPMethodConfig
    contract = [CONTRACT_CASE]

    def __init__(self, config: SemVLPMethodConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.target_encoder: nn.Module | None = None
        self.centroids: torch.Tensor | None = None
        self._saved: dict[str, Any] = {}
        self._special: torch.Tensor | None = None
        self._modes = {"single": 0, "two": 0}

    # -- set-up ------------------------------------------------------------------------------------------------------
    def prepare_model(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        _semvlp(model)
        if not hasattr(_unwrap(model), "itm_head"):
            raise MethodError("method semvlp pre-trains SemVLPForPreTraining (task image_text); "
                              f"got {type(_unwrap(model)).__name__}")
        return model

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        if self.config.image_encoder_learning_rate is None:
            return None
        core = _semvlp(model)
        encoder = {id(p) for p in core.image_encoder.parameters()}
        trainable = [p for p in model.parameters() if p.requires_grad]
        return [{"params": [p for p in trainable if id(p) not in encoder]},
                {"params": [p for p in trainable if id(p) in encoder], "lr": self.config.image_encoder_learning_rate}]

    def on_train_begin(self, ctx: MethodContext) -> None:
        model = ctx.model
        core = _semvlp(model)
        self.target_encoder = copy.deepcopy(core.image_encoder).eval().requires_grad_(False)
        saved = {k[len(TARGET_PREFIX):]: v for k, v in self._saved.items() if k.startswith(TARGET_PREFIX)}
        if saved:  # resumed: the encoder as it was when the run started
            self.target_encoder.load_state_dict(saved)
        if CENTROIDS in self._saved:
            self.centroids = self._saved[CENTROIDS].to(ctx.device)
        elif _unwrap(model).config.codebook_size:
            self.centroids = self._codebook(ctx, _unwrap(model).config.codebook_size)
        self._saved = {}

    @torch.no_grad()
    def _targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised frozen features [B, V, C] of the images."""
        assert self.target_encoder is not None
        self.target_encoder.to(pixel_values.device)
        grid = self.target_encoder(pixel_values)
        return normalise(grid.reshape(grid.shape[0], -1, grid.shape[-1]))

    @torch.no_grad()
    def _codebook(self, ctx: MethodContext, k: int) -> torch.Tensor:
        """k-means centroids of the normalised frozen features of (a seeded sample of) the training images' tokens;
        each process encodes its share, the features are gathered and ordered by example id, so every process (and
        a single-process run) clusters the same points."""
        feats, ids = [], []
        for batch in ctx.batches(shard=True):
            targets = self._targets(batch["pixel_values"])
            feats.append(targets.reshape(-1, targets.shape[-1]))
            ids.append(batch["example_id"].repeat_interleave(targets.shape[1]) * targets.shape[1]
                       + torch.arange(targets.shape[1], device=targets.device).repeat(targets.shape[0]))
        points, keys = ctx.all_gather(torch.cat(feats)), ctx.all_gather(torch.cat(ids))
        points = points[keys.argsort()]
        seed = int(ctx.args.seed)
        if len(points) > self.config.codebook_samples:
            gen = torch.Generator(device="cpu").manual_seed(seed)
            points = points[torch.randperm(len(points), generator=gen)[: self.config.codebook_samples].to(points.device)]
        centroids = kmeans(points, k, self.config.kmeans_iterations, seed)
        logger.info("semvlp: %d-entry codebook from %d image-token features", k, len(points))
        return centroids

    # -- every step ----------------------------------------------------------------------------------------------------
    def mode(self, step: int) -> str:
        return mode_at_step(step, self.config.mode_schedule, self.config.two_stream_ratio)

    def _special_ids(self, ctx: MethodContext, device: torch.device) -> torch.Tensor:
        if self._special is None:
            tokenizer = text_tokenizer(ctx.processor)
            self._special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        return self._special.to(device)

    def prepare_batch(self, batch: dict[str, Any], ctx: MethodContext) -> dict[str, Any]:
        model = ctx.model
        if not model.training:
            return batch
        if "pixel_values" not in batch or "input_ids" not in batch:
            raise MethodError("method semvlp needs image-text batches (task image_text)")
        config = _unwrap(model).config
        step, seed = ctx.global_step, int(ctx.args.seed)
        mode = self.mode(step)
        batch = dict(batch)
        batch["mode"] = mode
        input_ids = batch["input_ids"]
        device = input_ids.device
        tokenizer = text_tokenizer(ctx.processor)
        maskable = batch["attention_mask"].bool() & ~torch.isin(input_ids, self._special_ids(ctx, device))
        targets = self._targets(batch["pixel_values"])
        n_tokens = targets.shape[1]
        generators = [torch.Generator(device="cpu").manual_seed(_example_seed(seed, step, int(example)))
                      for example in batch["example_id"].tolist()]
        # each caption masked on its own tokens: the masks do not depend on the padding of the batch
        batch["input_ids"], batch["mlm_targets"] = mask_examples(
            input_ids, batch["attention_mask"], maskable, tokenizer.mask_token_id, config.vocab_size,
            self.config.mlm_probability, generators)
        visual = [torch.rand(n_tokens, generator=gen) < self.config.visual_mask_probability for gen in generators]
        batch["visual_mask"] = torch.stack(visual).to(device)
        batch["visual_targets"] = targets
        if self.centroids is not None:
            batch["visual_codes"] = torch.cdist(targets.reshape(-1, targets.shape[-1]),
                                                self.centroids.to(targets.device)).argmin(1).view(targets.shape[:2])
        if model.training:
            self._modes[mode] += 1
        return batch

    @property
    def task_loss_weight(self) -> float:
        return self.config.itm_weight

    def loss_terms(self, model: nn.Module, batch: dict[str, Any], outputs: Any,
                   ctx: MethodContext) -> dict[str, torch.Tensor]:
        weights = {"mlm": self.config.mlm_weight, "visual_regression": self.config.visual_regression_weight,
                   "visual_codebook": self.config.visual_codebook_weight, "qa": self.config.qa_weight}
        terms = {}
        for name, weight in weights.items():
            value = getattr(outputs, f"{name}_loss", None)
            if value is not None:
                terms[name] = weight * value
        return terms

    # -- state and report ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"micro_batches_single": self._modes["single"], "micro_batches_two": self._modes["two"]}
        if self.target_encoder is not None:
            state.update({TARGET_PREFIX + k: v for k, v in self.target_encoder.state_dict().items()})
        if self.centroids is not None:
            state[CENTROIDS] = self.centroids
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._modes = {"single": int(state.get("micro_batches_single", 0)), "two": int(state.get("micro_batches_two", 0))}
        self._saved = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}

    def report(self) -> dict[str, Any]:
        return {"semvlp_single_stream_micro_batches": self._modes["single"],
                "semvlp_two_stream_micro_batches": self._modes["two"],
                "semvlp_codebook_size": 0 if self.centroids is None else int(self.centroids.shape[0])}
