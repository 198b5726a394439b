"""``CAPTMethod``: contrastive pre-training on the core's ``masked_lm`` task (Luo et al., "Rethinking Denoised
Auto-Encoding in Language Pre-Training", EMNLP 2021; arXiv 2010.06351, first titled "CAPT: Contrastive
Pre-Training for Learning Denoised Sequence Representations").

    plmkit train --task masked_lm --data builtin-text --model_name_or_path minilm --method capt

Every training step, for the N sequences of a batch:
- x~ is the masked-LM corrupted input the task's collator produced (BERT's 80/10/10), the very input the MLM loss
  is computed on; the clean x is recovered from it: ``input_ids`` where ``labels == -100``, else ``labels``;
- h(x~) is read from the task's own forward: a forward hook on the base encoder (registered first, ahead of the
  task's hook that keeps only the masked rows) pools the last hidden states before they are cut; inside the same
  hook the base encoder runs once more on x, so h(x) costs one extra encoder forward (no third forward, no MLM head
  on the clean view);
- z = g(h), g a Linear-ReLU-Linear projection head (``model.capt_projection``, a submodule: it trains, is saved in
  the run folder and reloaded, and ``export`` removes it); NT-Xent over the 2N views (temperature tau; each view's
  positive is the other view of its sequence, the 2N - 2 others, plus an optional queue of past clean views, are the
  negatives); L = L_MLM + lambda * L_CAPT, the second logged as ``loss/capt``.

Both encoder forwards happen inside the model's forward, so under the run's autocast and inside DDP's forward. Under
DDP, z is tied (with weight zero) into the hidden states the MLM head reads, so DDP's unused-parameter scan finds the
projection head used, and the views of every process are gathered (with gradient) before the loss, which is then the
loss of the global batch.

On an image-text task (``--task image_text``, plmkit-vlp's; not imported here) the method makes x~ itself: BERT's
masking of each caption's own tokens and the features of a share of the image tokens zeroed (the model's
``visual_mask``), per example from a generator seeded with (seed, example id, step); the task's matching loss runs on
x~, the model's MLM loss on the masked captions is added (``mlm_weight``), and the hook re-encodes the clean pair.

Alignment and uniformity of z (Wang & Isola 2020) are measured on a few training batches, in eval mode, before each
evaluation (``geometry_batches``), and as running means over the training batches; both go to ``report()``.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers.utils import ModelOutput

from plmkit.capt.config import CAPTConfig
from plmkit.capt.losses import (
    FeatureQueue,
    ProjectionHead,
    alignment,
    distributed,
    gather_with_grad,
    uniformity,
)
from plmkit.core.losses import clean_ids, mask_examples, nt_xent, pool
from plmkit.core.processors import text_tokenizer
from plmkit.core.tasks.masked_lm import eval_generator
from plmkit.core.testing.contract import ContractCase
from plmkit.core.training import Method, MethodContext, MethodError

__all__ = ["CAPTMethod", "CONTRACT_CASE", "IMAGE_TEXT_CASE", "PROJECTION", "clean_ids", "hidden_size"]

logger = logging.getLogger(__name__)

PROJECTION = "capt_projection"  # the projection head's attribute on the model (its parameters: capt_projection.*)
ENCODER_INPUTS = ("attention_mask", "token_type_ids", "pixel_values", "mode")
GEOMETRY_KEY = 1  # the geometry pass's masks of an image-text batch: keys (seed, example, 0, 1), not (seed, example, step)

# The method's case for the contract kit (plmkit.core.testing.contract), on the masked_lm task: the kit trains it on
# the toy sentences as a .txt corpus with `--task masked_lm` and loads its export in AutoModelForMaskedLM. A queue of
# 8 rows (one batch) is full by checkpoint-8, so the resume check needs it restored; `geometry_batches` 1 keeps the
# geometry pass short. The 2-process check is skipped: each process masks its training batches from its own random
# stream.
CONTRACT_CASE = ContractCase("capt", {"projection_size": 16, "queue_size": 8, "geometry_batches": 1},
                             task="masked_lm", extra_passes=True)
# ... and on the image_text task (the kit's tiny SemVLP and coloured shapes): capt masks text and image tokens itself,
# per example from (seed, step, example), so the 2-process check runs too.
IMAGE_TEXT_CASE = ContractCase("capt", {"projection_size": 16, "geometry_batches": 1, "pooling": "mean"},
                               task="image_text", extra_passes=True, trec_defaults=False)


def hidden_size(config: Any) -> int:
    """The width of the encoder's last hidden states (BERT-likes: hidden_size; DistilBERT: dim; others: d_model)."""
    for name in ("hidden_size", "dim", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise MethodError(f"capt cannot tell the hidden size of {type(config).__name__} (no hidden_size/dim/d_model)")


def _replace_first(output: Any, first: torch.Tensor) -> Any:
    """The encoder's output with its first entry (the last hidden states) replaced."""
    if isinstance(output, ModelOutput):
        output[next(iter(output.keys()))] = first
        return output
    return (first, *output[1:])


class CAPTMethod(Method):
    """CAPT: MLM plus NT-Xent between each sequence and its MLM-corrupted view."""

    name = "capt"
    config_class = CAPTConfig
    config: CAPTConfig
    contract = [CONTRACT_CASE, IMAGE_TEXT_CASE]

    def __init__(self, config: CAPTConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.queue = FeatureQueue(self.config.queue_size)
        self.head: ProjectionHead | None = None
        self.base: nn.Module | None = None
        self._image_tokens: int | None = None  # image tokens the base encoder makes of one image (image-text tasks)
        self.handles: list[RemovableHandle] = []
        self._clean: torch.Tensor | None = None  # x of the batch about to be trained on (set by prepare_batch)
        self._views: tuple[torch.Tensor, torch.Tensor] | None = None  # (z(x), z(x~)) of the last training forward
        # running sums over training batches: alignment (every batch), uniformity (batches of two or more)
        self.train_sums = {"alignment": 0.0, "batches": 0, "uniformity": 0.0, "uniformity_batches": 0}
        self.geometry: list[dict[str, float]] = []  # one entry per evaluation: step, alignment, uniformity

    # -- set-up --------------------------------------------------------------------------------------------------
    def prepare_model(self, model: nn.Module, ctx: MethodContext | None = None) -> nn.Module:
        """Add the projection head as ``model.capt_projection`` (kept if the model already has one, e.g. a capt run
        folder trained further) and hook the base encoder."""
        task = ctx.task if ctx is not None else None
        if task is not None and getattr(task, "model_kind", "masked-lm") != "masked-lm":
            raise MethodError(f"capt contrasts each sequence with its masked-LM corrupted view: it runs on task "
                              f"masked_lm (--task masked_lm) or image_text, not "
                              f"{getattr(task, 'name', type(task).__name__)}")
        if self.config.pooling == "cls" and getattr(getattr(task, "config", None), "packing", "line") == "blocks":
            logger.warning("capt: pooling 'cls' with the task's packing 'blocks' takes the first token of each block, "
                           "which is not a [CLS] token (blocks are cut from the concatenated lines); "
                           "--method.pooling mean pools the whole block")
        base = getattr(model, "base_model", None)
        if not isinstance(base, nn.Module) or base is model:
            raise MethodError(f"capt needs a model with a base encoder (model.base_model) under its head; "
                              f"{type(model).__name__} has none")
        c = self.config
        head = getattr(model, PROJECTION, None)
        if not isinstance(head, ProjectionHead):
            seed = int(getattr(ctx.args, "seed", 0)) if ctx is not None else 0
            with torch.random.fork_rng(devices=[]):  # the run's random stream (masks, dropout) stays untouched
                torch.manual_seed(seed)
                head = ProjectionHead(hidden_size(model.config), c.projection_size)
            ref = next(model.parameters())
            model.add_module(PROJECTION, head.to(device=ref.device, dtype=ref.dtype))
        elif head.out.out_features != c.projection_size:
            raise MethodError(f"the model's projection head has {head.out.out_features} outputs but projection_size "
                              f"is {c.projection_size}")
        self.head = head
        self.base = base
        self.remove_hooks()
        # prepend: this hook must see the full [B, T, H] states before the task's hook keeps only masked rows
        self.handles = [base.register_forward_hook(self._on_encoder_output, with_kwargs=True, prepend=True)]
        return model

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def on_train_begin(self, ctx: MethodContext) -> None:
        if ctx.global_train_batch_size < 2:
            raise MethodError(f"capt needs at least 2 examples per batch (the other examples are the negatives); "
                              f"got batch size {ctx.global_train_batch_size} (--per_device_train_batch_size)")

    # -- every step ---------------------------------------------------------------------------------------------
    def prepare_batch(self, batch: dict[str, Any], ctx: MethodContext | None = None) -> dict[str, Any]:
        """Recover x from the masked batch (masked_lm), or corrupt an image-text batch (training only); the encoder
        hook uses x in the training forward that follows."""
        if "pixel_values" in batch:
            return self._prepare_image_text(batch, ctx)
        ids, labels = batch.get("input_ids"), batch.get("labels")
        if ids is None or labels is None or labels.shape != ids.shape:
            shape = None if labels is None else tuple(labels.shape)
            raise MethodError(f"capt needs masked-LM batches (token-level labels, -100 where nothing was masked, as "
                              f"task masked_lm gives); got labels of shape {shape}")
        self._clean = clean_ids(ids, labels)
        self._views = None
        return batch

    # -- image-text tasks -----------------------------------------------------------------------------------------
    def _prepare_image_text(self, batch: dict[str, Any], ctx: MethodContext | None) -> dict[str, Any]:
        """A training batch of image-text pairs: x~ masks the caption (BERT's 80/10/10 of `mlm_probability` of its
        tokens, `mlm_targets` for the model's MLM loss) and zeroes the features of `visual_mask_probability` of the
        image tokens (`visual_mask`); x is the batch as it came."""
        if ctx is None:
            raise MethodError("capt on image-text batches needs the run's context (its tokenizer, seed and step)")
        if not ctx.model.training:
            return batch
        if "input_ids" not in batch or "example_id" not in batch:
            raise MethodError("capt on image-text batches needs input_ids and example_id (task image_text gives both)")
        batch = dict(batch)
        clean = batch["input_ids"]
        batch.update(self.corrupt(batch, ctx, ctx.global_step))  # before _clean is set: it may run the encoder once
        self._clean, self._views = clean, None
        return batch

    def corrupt(self, batch: dict[str, Any], ctx: MethodContext, *keys: int) -> dict[str, torch.Tensor]:
        """`input_ids`, `mlm_targets` and `visual_mask` of x~ for an image-text batch; each example's masks come
        from a generator seeded with (--seed, its example id, `keys`), so they do not depend on the batch it falls
        in or on the number of processes."""
        c = self.config
        tokenizer = text_tokenizer(ctx.processor)
        if tokenizer.mask_token_id is None:
            raise MethodError(f"capt masks captions with the tokenizer's mask token; {type(tokenizer).__name__} has none")
        ids = batch["input_ids"]
        special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=ids.dtype, device=ids.device)
        maskable = batch["attention_mask"].bool() & ~torch.isin(ids, special)
        n_image = self.image_tokens(batch["pixel_values"])
        vocab = int(getattr(self.base.config, "vocab_size", len(tokenizer)))
        generators = [eval_generator(int(ctx.args.seed), int(example), *keys) for example in batch["example_id"].tolist()]
        visual = torch.stack([torch.rand(n_image, generator=gen) < c.visual_mask_probability for gen in generators])
        corrupted, targets = mask_examples(ids, batch["attention_mask"], maskable, tokenizer.mask_token_id, vocab,
                                           c.mlm_probability, generators)
        return {"input_ids": corrupted, "mlm_targets": targets, "visual_mask": visual.to(ids.device)}

    @torch.no_grad()
    def image_tokens(self, pixel_values: torch.Tensor) -> int:
        """How many image tokens the base encoder makes of one image (read once from its output for the first image
        alone, in eval mode)."""
        if self._image_tokens is None:
            assert self.base is not None
            was_training = self.base.training
            self.base.eval()
            try:
                self._image_tokens = int(self.base(pixel_values=pixel_values[:1])[0].shape[1])
            finally:
                self.base.train(was_training)
        return self._image_tokens

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """h: pooled over whatever states the encoder returns. The attention mask covers the first tokens (the text);
        states after them (a vision-language encoder's image tokens, after the text) all count; a mask of another
        shape is not used (then a plain mean)."""
        if mask is not None and mask.dim() == 2 and mask.shape[0] == hidden.shape[0] and mask.shape[1] < hidden.shape[1]:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], hidden.shape[1] - mask.shape[1])], dim=1)
        if mask is not None and tuple(mask.shape) != tuple(hidden.shape[:2]):
            mask = None
        return pool(hidden, mask, self.config.pooling)

    def _on_encoder_output(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                           output: Any) -> None:
        """In a training forward: pool h(x~) from the full hidden states, encode x once more, project both."""
        clean, self._clean = self._clean, None
        if not module.training or clean is None:
            return None
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        ids = bound.arguments.get("input_ids")
        if ids is None or tuple(ids.shape) != tuple(clean.shape):
            raise MethodError(f"capt: the encoder got input_ids of shape {None if ids is None else tuple(ids.shape)}, "
                              f"the batch has {tuple(clean.shape)} (capt needs input_ids, not inputs_embeds)")
        hidden = output[0]
        if hidden.dim() != 3 or hidden.shape[0] != ids.shape[0]:
            raise MethodError(f"capt: {type(module).__name__} returned states of shape {tuple(hidden.shape)}; "
                              f"expected [batch, length, hidden] ahead of the task's hook")
        mask = bound.arguments.get("attention_mask")
        h_corrupted = self._pool(hidden, mask)
        bound.arguments["input_ids"] = clean
        if bound.arguments.get("visual_mask") is not None:
            bound.arguments["visual_mask"] = None  # the clean view sees every image feature
        clean_args, clean_kwargs = bound.args, bound.kwargs
        assert self.head is not None
        # .forward, not __call__: no hook runs for the clean view (neither this one nor the task's row filter)
        if self.config.stop_gradient_clean:
            with torch.no_grad():
                z_clean = self.head(self._pool(module.forward(*clean_args, **clean_kwargs)[0], mask))
            z_corrupted = self.head(h_corrupted)
        else:
            h_clean = self._pool(module.forward(*clean_args, **clean_kwargs)[0], mask)
            z_clean, z_corrupted = self.head(torch.cat([h_clean, h_corrupted])).chunk(2)
        self._views = (z_clean, z_corrupted)
        if distributed():
            # DDP (find_unused_parameters) finds the parameters a forward used by walking back from its outputs:
            # tie z into the hidden states the MLM head reads (adding zero), so the projection head counts as used.
            return _replace_first(output, hidden + 0.0 * torch.cat(self._views).sum())
        return None

    def loss_terms(self, model: nn.Module, batch: dict[str, Any], outputs: Any,
                   ctx: MethodContext | None = None) -> dict[str, torch.Tensor]:
        """``capt``: lambda * NT-Xent over the 2N views (of every process) and the queue."""
        views, self._views = self._views, None
        if views is None:
            raise MethodError("capt: the training forward never reached the base encoder's hook (was prepare_model "
                              "applied to this model?)")
        c = self.config
        z_clean, z_corrupted = gather_with_grad(views[0]), gather_with_grad(views[1])
        n = z_clean.shape[0]
        negatives = self.queue.negatives(z_clean.device)
        if n < 2 and negatives is None:
            raise MethodError(f"capt needs negatives: this batch holds {n} example (batch size {n}), so its views have "
                              f"no other example to contrast with; use a batch size >= 2, and "
                              f"--dataloader_drop_last true when the data leaves a last batch of one")
        loss = nt_xent(z_clean, z_corrupted, c.temperature, negatives)
        terms = {"capt": c.capt_weight * loss}
        if "mlm_targets" in batch:  # image-text: the model's MLM loss on the masked captions (masked_lm: the task's)
            mlm = getattr(outputs, "mlm_loss", None)
            if mlm is None:
                raise MethodError(f"capt on image-text batches needs a model that returns mlm_loss for mlm_targets "
                                  f"(SemVLPForPreTraining does); {type(outputs).__name__} has none")
            terms = {"mlm": c.mlm_weight * mlm, **terms}
        self.queue.push(z_clean)
        self.train_sums["alignment"] += alignment(z_clean, z_corrupted)
        self.train_sums["batches"] += 1
        if n >= 2:
            self.train_sums["uniformity"] += uniformity(z_clean)
            self.train_sums["uniformity_batches"] += 1
        return terms

    # -- evaluation: geometry of z --------------------------------------------------------------------------------
    @torch.no_grad()
    def measure(self, model: nn.Module, batches: Any, ctx: MethodContext | None = None) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
        """(z(x), z(x~)) of every example of `batches`, the model in eval mode: masked-LM batches, or image-text
        batches (masked here with the geometry pass's keys; needs `ctx`)."""
        base = model.base_model
        assert self.head is not None
        was_training = model.training
        model.eval()
        clean, corrupted = [], []
        try:
            for batch in batches:
                inputs = {k: batch[k] for k in ENCODER_INPUTS if k in batch}
                mask = inputs.get("attention_mask")
                if "pixel_values" in batch:
                    if ctx is None:
                        raise MethodError("capt: measuring image-text batches needs the run's context")
                    x = {"input_ids": batch["input_ids"]}
                    x_corrupted = self.corrupt(batch, ctx, 0, GEOMETRY_KEY)
                    x_corrupted.pop("mlm_targets")
                else:
                    x = {"input_ids": clean_ids(batch["input_ids"], batch["labels"])}
                    x_corrupted = {"input_ids": batch["input_ids"]}
                for view, out in ((x, clean), (x_corrupted, corrupted)):
                    out.append(self.head(self._pool(base(**inputs, **view)[0], mask)).float())
        finally:
            model.train(was_training)
        return torch.cat(clean), torch.cat(corrupted)

    def before_evaluate(self, ctx: MethodContext) -> None:
        """Alignment and uniformity of z on the first `geometry_batches` training batches (fixed masks: drawn from a
        generator seeded with --seed, the run's random stream restored afterwards)."""
        c = self.config
        if c.geometry_batches == 0 or ctx.train_dataset is None or self.head is None:
            return
        step = ctx.global_step
        if self.geometry and self.geometry[-1]["step"] == step:
            return  # validation and test of the same model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.args.seed)
            z_clean, z_corrupted = self.measure(ctx.model, ctx.batches(limit=c.geometry_batches), ctx)
        z_clean, z_corrupted = ctx.all_gather(z_clean), ctx.all_gather(z_corrupted)
        self.geometry.append({"step": step, "alignment": alignment(z_clean, z_corrupted),
                              "uniformity": uniformity(z_clean), "examples": int(z_clean.shape[0])})

    # -- state, report, export ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**self.queue.state(), "train_sums": dict(self.train_sums), "geometry": list(self.geometry)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "train_sums" not in state:
            raise MethodError("the checkpoint holds no capt state (queue, running measures): it cannot be resumed")
        try:
            self.queue.load(state)
        except ValueError as err:
            raise MethodError(f"capt: {err}") from None
        self.train_sums = dict(state["train_sums"])
        self.geometry = list(state["geometry"])

    def report(self) -> dict[str, Any]:
        """capt_alignment / capt_uniformity (the last evaluation's, eval mode), their per-evaluation history
        (capt_geometry), the running means over training batches (capt_train_*), the queue's fill."""
        out: dict[str, Any] = {}
        if self.head is not None:
            out["capt_projection_parameters"] = sum(p.numel() for p in self.head.parameters())
        sums = self.train_sums
        if sums["batches"]:
            out["capt_train_alignment"] = sums["alignment"] / sums["batches"]
        if sums["uniformity_batches"]:
            out["capt_train_uniformity"] = sums["uniformity"] / sums["uniformity_batches"]
        if self.geometry:
            out["capt_alignment"] = self.geometry[-1]["alignment"]
            out["capt_uniformity"] = self.geometry[-1]["uniformity"]
            out["capt_geometry"] = list(self.geometry)
        if self.config.queue_size:
            out["capt_queue_filled"] = len(self.queue)
        return out

    def export(self, model: nn.Module) -> nn.Module:
        """The plain masked-LM model: hooks removed, projection head dropped."""
        self.remove_hooks()
        if hasattr(model, PROJECTION):
            delattr(model, PROJECTION)
        self.head = None
        return model
