"""`PromptModel`: a masked-LM encoder with a template, trainable prompt tokens and a [MASK] read-out.

One `PreTrainedModel` (registered with the Auto classes by `register`, which the core runs through the
entry-point group `plmkit.models` before it loads a model, so `save_pretrained`/`from_pretrained` and the core's
`load_model(run_dir)` rebuild it) serves every prompt objective, and is the shared machinery later prompt methods
(UPT) build on:

- `objective="contrastive"` (CP-Tuning): feature = L2-normalised masked-LM-head transform at [MASK]; loss = PCCL
  (+ lambda * auxiliary MLM); class scores = cosine to the nearest training anchor (or class centroid), with the
  anchors stored as buffers so a saved model predicts on new text. A row that is itself a training example
  (`anchor_id` >= 0, its `example_id` in the training split) is never scored against its own anchor.
- `objective="verbalizer"` (LM-BFF style prompt tuning): class scores = masked-LM logits of the label words at
  [MASK]; loss = cross-entropy.
- `objective="upt"` (UPT, Wang et al. 2022): one or more POV templates (`templates`, each with its label words);
  loss = cross-entropy over the **whole vocabulary** at [MASK] (Eq. 2, plus lambda * KSMLM rows, Eq. 4); class
  scores = the label words' logits (prediction restricted to them). A row's template comes from `task_ids`
  (multi-task stage 1), else a random template per row while training and the mean of the per-template label-word
  log-probabilities at evaluation (UPT-SE; a single template is plain UPT).

The masked-LM decoder is the input embedding matrix (weights tied, as in BERT/RoBERTa) plus a vocabulary bias, and
vocabulary scores are computed only where needed ([MASK] rows, label words, masked text tokens).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from plmkit.core.losses import mask_tokens
from plmkit.core.training import MethodError
from plmkit.prompt_tuning.anchors import NO_ANCHOR, centroid_scores, nearest_scores
from plmkit.prompt_tuning.losses import pair_wise_cost_sensitive_loss
from plmkit.prompt_tuning.pov import apply_row_templates, label_word_ids
from plmkit.prompt_tuning.templates import (
    apply_template,
    compile_template,
    count_prompt_tokens,
    parse_template,
)

__all__ = ["PromptModel", "PromptModelConfig", "PromptModelOutput", "compute_anchors", "encode_anchors", "predict",
           "register"]

OBJECTIVES = ("contrastive", "verbalizer", "upt")
NO_WORD = -1.0e4  # upt: the logit of a padded candidate slot (rows with fewer label words than the widest task)


def _across_processes(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Under DDP, the pairs of the whole global batch: features gathered with gradient (the all-gather's backward
    sums each slice's gradient over processes, and DDP's averaging then gives exactly the single-process gradient of
    the loss over the global batch), labels without. One process: unchanged."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, labels
    gathered_labels = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered_labels, labels.contiguous())
    return torch.cat(dist_nn.all_gather(features.contiguous())), torch.cat(gathered_labels)


def _check_single_tokens(words: list[str], tokenizer: PreTrainedTokenizerBase, from_names: bool = True) -> list[int]:
    """The token id of each word (as it follows a space), or a one-line error when one is several tokens."""
    ids = []
    for word in words:
        pieces = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            given = "the label names are used as label words, but" if from_names else "label word"
            raise MethodError(f"{given} {word!r} is {len(pieces)} tokens for this tokenizer: pass "
                              f"--method.label_words with one single-token word per label, in label order")
        ids.append(pieces[0])
    return ids


class PromptModelConfig(PretrainedConfig):
    """The backbone's config (as a dict) plus the prompt settings. Token ids (template literals, special tokens,
    label words) are filled in by `PromptModel.bind_tokenizer` and saved with the model."""

    model_type = "plmkit-prompt"

    def __init__(
        self,
        backbone: dict[str, Any] | None = None,
        objective: str = "contrastive",
        template: str = "{text} {prompt} {mask}",
        num_prompt_tokens: int = 4,
        max_length: int | None = None,
        head_activation: str = "gelu",
        margin: float = 0.4,
        scale: float = 64.0,
        cost_ratio: float = 1.0,
        mlm_weight: float = 0.0,
        mlm_probability: float = 0.15,
        prediction: str = "nearest",
        label_words: list[str] | None = None,
        label_words_from_names: bool = False,
        num_anchors: int = 0,
        template_ids: list[int] | None = None,
        special_ids: dict[str, int] | None = None,
        label_word_ids: list[int] | None = None,
        templates: list[str] | None = None,
        template_label_words: list[list[str]] | None = None,
        ksmlm_weight: float = 0.0,
        ksmlm_task: int = -1,
        templates_ids: list[list[int]] | None = None,
        template_label_word_ids: list[list[int]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.backbone = backbone or {}
        self.objective = objective
        self.template = template
        self.num_prompt_tokens = num_prompt_tokens
        self.max_length = max_length
        self.head_activation = head_activation
        self.margin = margin
        self.scale = scale
        self.cost_ratio = cost_ratio
        self.mlm_weight = mlm_weight
        self.mlm_probability = mlm_probability
        self.prediction = prediction
        self.label_words = label_words or []
        self.label_words_from_names = label_words_from_names  # taken from the label names: each must be one token
        self.num_anchors = num_anchors
        self.template_ids = template_ids
        self.special_ids = special_ids
        self.label_word_ids = label_word_ids
        self.templates = templates or []  # upt: POV templates (UPT-SE variants, or stage-1 tasks)
        self.template_label_words = template_label_words or []  # upt: label words of each template
        self.ksmlm_weight = ksmlm_weight  # upt: lambda of the KSMLM rows (Eq. 4)
        self.ksmlm_task = ksmlm_task  # upt: the template index of KSMLM rows (-1: none)
        self.templates_ids = templates_ids
        self.template_label_word_ids = template_label_word_ids
        super().__init__(**kwargs)

    def backbone_config(self) -> PretrainedConfig:
        return AutoConfig.for_model(**self.backbone)


@dataclass
class PromptModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (batch, classes): anchor similarities or label-word scores
    features: torch.Tensor | None = None  # (batch, hidden): the [MASK] representation (L2-normalised if contrastive)


class MaskedLMHead(nn.Module):
    """dense -> activation -> LayerNorm (BERT's `cls.predictions.transform`, RoBERTa's `lm_head` before its decoder),
    and the vocabulary bias; the decoder weight is the encoder's input embedding matrix."""

    def __init__(self, hidden_size: int, vocab_size: int, activation: str, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = ACT2FN[activation]
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.activation(self.dense(hidden)))

    def copy_from(self, masked_lm: PreTrainedModel) -> None:
        """Take the transform and bias of a transformers masked-LM model (BERT-like or RoBERTa-like heads)."""
        if hasattr(masked_lm, "cls"):
            head = masked_lm.cls.predictions
            dense, norm, bias = head.transform.dense, head.transform.LayerNorm, head.decoder.bias
        elif hasattr(masked_lm, "lm_head"):
            head = masked_lm.lm_head
            dense, norm, bias = head.dense, head.layer_norm, head.decoder.bias
        else:
            raise MethodError(f"{type(masked_lm).__name__}: no BERT- or RoBERTa-style masked-LM head to read the [MASK] feature from")
        with torch.no_grad():
            self.dense.load_state_dict(dense.state_dict())
            self.layer_norm.load_state_dict(norm.state_dict())
            if bias is not None:
                self.bias.copy_(bias)


class PromptModel(PreTrainedModel):
    """Masked-LM encoder + template + prompt tokens + [MASK] read-out (module docstring)."""

    config_class = PromptModelConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"

    def __init__(self, config: PromptModelConfig) -> None:
        super().__init__(config)
        if config.objective not in OBJECTIVES:
            raise MethodError(f"objective must be one of {OBJECTIVES}, got {config.objective!r}")
        backbone = config.backbone_config()
        self.encoder = AutoModel.from_config(backbone)
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # unused: the read-out is at [MASK]
        self.head = MaskedLMHead(
            backbone.hidden_size, backbone.vocab_size, config.head_activation, getattr(backbone, "layer_norm_eps", 1e-12)
        )
        self.prompt_embeddings = nn.Parameter(torch.zeros(config.num_prompt_tokens * self._prompt_slots(), backbone.hidden_size))
        hidden = backbone.hidden_size
        self.register_buffer("anchor_features", torch.zeros(config.num_anchors, hidden))
        self.register_buffer("anchor_labels", torch.zeros(config.num_anchors, dtype=torch.long))
        self.register_buffer("anchor_ids", torch.zeros(config.num_anchors, dtype=torch.long))
        self.post_init()

    def _prompt_slots(self) -> int:
        pieces = parse_template(self.config.template, self.config.num_prompt_tokens)
        return sum(kind == "prompt" for kind, _ in pieces)

    def _init_weights(self, module: nn.Module) -> None:
        if module is self:
            # transformers' init helpers skip tensors already loaded from a checkpoint.
            init.normal_(self.prompt_embeddings, std=getattr(self.config.backbone_config(), "initializer_range", 0.02))
        else:
            super()._init_weights(module)

    # -- building from a backbone ----------------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, backbone: PreTrainedModel, masked_lm: PreTrainedModel, seed: int = 0, **prompt: Any) -> PromptModel:
        """Wrap a loaded encoder model (any head; its `base_model` is used) and take the masked-LM head of
        `masked_lm` (same architecture). Prompt tokens start as the embeddings of random vocabulary tokens."""
        bb = backbone.config
        config = PromptModelConfig(
            backbone=bb.to_dict(),
            head_activation="gelu" if hasattr(masked_lm, "lm_head") else bb.hidden_act,
            num_labels=bb.num_labels,
            id2label=bb.id2label,
            label2id=bb.label2id,
            pad_token_id=bb.pad_token_id,
            **prompt,
        )
        model = cls(config)
        missing, unexpected = model.encoder.load_state_dict(backbone.base_model.state_dict(), strict=False)
        if missing or any(not k.startswith("pooler.") for k in unexpected):
            raise MethodError(f"backbone weights do not fit the encoder: missing {missing[:5]}, unexpected {unexpected[:5]}")
        model.head.copy_from(masked_lm)
        model._init_prompt_tokens(seed)
        return model

    def for_objective(self, objective: str, seed: int = 0, **prompt: Any) -> PromptModel:
        """A new model for another objective over this one's encoder and masked-LM head, e.g. CP-Tuning from the
        folder `plmkit upt adapt-head` writes; prompt tokens, anchors and label words start afresh."""
        c = self.config
        config = PromptModelConfig(
            backbone=c.backbone, head_activation=c.head_activation, num_labels=c.num_labels, id2label=c.id2label,
            label2id=c.label2id, pad_token_id=c.pad_token_id, objective=objective, **prompt,
        )
        model = type(self)(config)
        model.encoder.load_state_dict(self.encoder.state_dict())
        model.head.load_state_dict(self.head.state_dict())
        model._init_prompt_tokens(seed)
        return model

    def _init_prompt_tokens(self, seed: int) -> None:
        """Prompt tokens start as the embeddings of random vocabulary tokens."""
        words = self.encoder.get_input_embeddings().weight
        if len(self.prompt_embeddings):
            generator = torch.Generator().manual_seed(seed)
            rows = torch.randint(words.shape[0], (len(self.prompt_embeddings),), generator=generator)
            with torch.no_grad():
                self.prompt_embeddings.copy_(words[rows])

    def bind_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Resolve the token ids the forward needs (special tokens, template literals, label words) from the
        tokenizer the data is encoded with; they are stored in the config and saved with the model."""
        specials = {"cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id, "mask": tokenizer.mask_token_id,
                    "pad": tokenizer.pad_token_id}
        missing = [k for k, v in specials.items() if v is None]
        if missing:
            raise MethodError(f"prompt methods need a masked-LM tokenizer with {missing} tokens; {type(tokenizer).__name__} has none")
        template_ids = compile_template(self.config.template, self.config.num_prompt_tokens, tokenizer)
        if count_prompt_tokens(template_ids) != len(self.prompt_embeddings):
            raise MethodError("template and prompt table disagree on the number of prompt tokens")
        word_ids = None
        if self.config.objective == "verbalizer":
            words = self.config.label_words
            if len(words) != self.config.num_labels:
                raise MethodError(f"label_words has {len(words)} word(s) {words}, the task has {self.config.num_labels} labels")
            word_ids = _check_single_tokens(words, tokenizer, self.config.label_words_from_names)
        if self.config.objective == "upt":
            if self.config.label_words_from_names:
                _check_single_tokens(self.config.template_label_words[0], tokenizer)
            self._bind_pov(tokenizer)
            word_ids = self.config.template_label_word_ids[0]
        self.config.special_ids = specials
        self.config.template_ids = template_ids
        self.config.label_word_ids = word_ids

    def _bind_pov(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Compile every POV template and its label words (first sub-token rule, `pov.label_word_ids`)."""
        cfg = self.config
        if not cfg.templates or len(cfg.templates) != len(cfg.template_label_words):
            raise MethodError(f"upt needs one label-word list per template; got {len(cfg.templates)} template(s) and "
                              f"{len(cfg.template_label_words)} list(s)")
        cfg.templates_ids = [compile_template(t, 0, tokenizer) for t in cfg.templates]
        cfg.template_label_word_ids = [label_word_ids(w, tokenizer) if w else [] for w in cfg.template_label_words]

    def _max_length(self) -> int:
        backbone = self.config.backbone_config()
        limit = backbone.max_position_embeddings
        if backbone.model_type in ("roberta", "xlm-roberta", "camembert"):
            limit -= backbone.pad_token_id + 1  # positions start after the padding index
        return min(limit, self.config.max_length or limit)

    # -- anchors ------------------------------------------------------------------------------------------------
    def set_anchors(self, features: torch.Tensor, labels: torch.Tensor, example_ids: torch.Tensor) -> None:
        """Store training features as anchors, with their labels and `example_id`s (buffers: saved and reloaded
        with the model)."""
        device = self.prompt_embeddings.device
        self.anchor_features = F.normalize(features.float(), dim=-1).to(device)
        self.anchor_labels = labels.long().to(device)
        self.anchor_ids = example_ids.long().to(device)
        self.config.num_anchors = len(features)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # A checkpoint may hold another number of anchors than this model (e.g. taken at an evaluation before the
        # checkpoint was saved, while a resumed run starts with none): take the stored number.
        for name in ("anchor_features", "anchor_labels", "anchor_ids"):
            stored, own = state_dict.get(prefix + name), getattr(self, name)
            if stored is not None and stored.shape != own.shape:
                setattr(self, name, own.new_empty(stored.shape))
                self.config.num_anchors = stored.shape[0]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- forward ------------------------------------------------------------------------------------------------
    def encode_mask(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mlm: bool = False,
        row_template: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The [MASK] feature (after the head transform, before normalisation), and with `mlm` the auxiliary
        masked-LM loss on randomly masked text tokens of the same pass (BERT's 80/10/10 rule, `core.losses.
        mask_tokens`). With `row_template` (upt), row i is laid out by POV template `row_template[i]`."""
        if self.config.template_ids is None:
            raise MethodError("the prompt model has no token ids yet: call bind_tokenizer(tokenizer) first")
        ids = self.config.special_ids
        layout = dict(cls_id=ids["cls"], sep_id=ids["sep"], mask_id=ids["mask"], pad_id=ids["pad"], max_length=self._max_length())
        if row_template is None:
            batch = apply_template(input_ids, attention_mask, self.config.template_ids, **layout)
        else:
            batch = apply_row_templates(input_ids, attention_mask, self.config.templates_ids, row_template, **layout)
        tokens = batch.input_ids
        mlm_labels = None
        if mlm:
            tokens, mlm_labels = mask_tokens(tokens, batch.text_mask, ids["mask"], self.head.bias.numel(),
                                             self.config.mlm_probability)
        embeddings = self.encoder.get_input_embeddings()(tokens)
        if len(self.prompt_embeddings):
            is_prompt = (batch.prompt_index >= 0)[..., None]
            prompts = self.prompt_embeddings[batch.prompt_index.clamp(min=0)].to(embeddings.dtype)
            embeddings = torch.where(is_prompt, prompts, embeddings)
        hidden = self.encoder(inputs_embeds=embeddings, attention_mask=batch.attention_mask).last_hidden_state
        rows = torch.arange(len(tokens), device=tokens.device)
        feature = self.head.transform(hidden[rows, batch.mask_positions])
        mlm_loss = None
        if mlm_labels is not None:
            chosen = mlm_labels != -100
            if chosen.any():
                logits = self.vocab_scores(self.head.transform(hidden[chosen]))
                mlm_loss = F.cross_entropy(logits.float(), mlm_labels[chosen])
            else:
                mlm_loss = hidden.sum() * 0.0
        return feature, mlm_loss

    def vocab_scores(self, transformed: torch.Tensor, token_ids: list[int] | None = None) -> torch.Tensor:
        """Masked-LM logits of `transformed` rows over the vocabulary (or only over `token_ids`)."""
        weight = self.encoder.get_input_embeddings().weight
        bias = self.head.bias
        if token_ids is not None:
            weight, bias = weight[token_ids], bias[token_ids]
        return transformed @ weight.T.to(transformed.dtype) + bias.to(transformed.dtype)

    def class_scores(self, features: torch.Tensor, anchor_id: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, classes) from the stored anchors, by `config.prediction`; row i never uses anchor
        `anchor_id[i]` (the row itself, when it is a training example)."""
        if self.config.num_anchors == 0:
            raise MethodError("the model has no anchors: train it (anchors are taken at the end) or call set_anchors")
        if anchor_id is None:
            anchor_id = torch.full((len(features),), NO_ANCHOR, dtype=torch.long, device=features.device)
        score = nearest_scores if self.config.prediction == "nearest" else centroid_scores
        return score(features, anchor_id.to(features.device), self.anchor_features, self.anchor_labels,
                     self.anchor_ids, self.config.num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,  # accepted from the core collator; segments are rebuilt
        labels: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,  # upt stage 1: the row's template (source task, or KSMLM)
        candidate_ids: torch.Tensor | None = None,  # upt stage 1: the row's label-word token ids, -1 padded
        anchor_id: torch.Tensor | None = None,  # contrastive: the row's own anchor (training example_id), or -1
        **kwargs: Any,
    ) -> PromptModelOutput:
        cfg = self.config
        if cfg.objective == "upt":
            return self._upt_forward(input_ids, attention_mask, labels, task_ids, candidate_ids)
        mlm = self.training and cfg.mlm_weight > 0
        feature, mlm_loss = self.encode_mask(input_ids, attention_mask, mlm=mlm)
        loss = None
        if cfg.objective == "contrastive":
            features = F.normalize(feature.float(), dim=-1)
            if labels is not None:
                pair_features, pair_labels = _across_processes(features, labels)
                loss = pair_wise_cost_sensitive_loss(pair_features, pair_labels, cfg.margin, cfg.scale, cfg.cost_ratio)
            # While training, scores are not needed (and anchors may not exist yet).
            logits = None if self.training else self.class_scores(features, anchor_id)
        else:
            features = feature
            logits = self.vocab_scores(feature, cfg.label_word_ids).float()
            if labels is not None:
                loss = F.cross_entropy(logits, labels)
        if mlm_loss is not None and loss is not None:
            loss = loss + cfg.mlm_weight * mlm_loss
        return PromptModelOutput(loss=loss, logits=logits, features=features)

    def _upt_forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        task_ids: torch.Tensor | None,
        candidate_ids: torch.Tensor | None,
    ) -> PromptModelOutput:
        """UPT (module docstring): L = L_MP (+ lambda L_KSMLM) over the full vocabulary at [MASK], label-word scores
        as logits; without `task_ids`, UPT-SE picks a random template per row (training) or averages all (eval)."""
        if self.config.templates_ids is None:
            raise MethodError("the prompt model has no token ids yet: call bind_tokenizer(tokenizer) first")
        if task_ids is not None or self.training or len(self.config.templates_ids) == 1:
            if task_ids is None:
                n = len(self.config.templates_ids)
                task_ids = torch.randint(n, (len(input_ids),), device=input_ids.device)
            return self._upt_rows(input_ids, attention_mask, labels, task_ids, candidate_ids)
        outs = [
            self._upt_rows(input_ids, attention_mask, labels, torch.full_like(input_ids[:, 0], t), candidate_ids)
            for t in range(len(self.config.templates_ids))
        ]
        logits = torch.stack([F.log_softmax(o.logits, -1) for o in outs]).mean(0)
        loss = torch.stack([o.loss for o in outs]).mean() if labels is not None else None
        return PromptModelOutput(loss=loss, logits=logits, features=outs[0].features)

    def _upt_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        task_ids: torch.Tensor,
        candidate_ids: torch.Tensor | None,
    ) -> PromptModelOutput:
        cfg = self.config
        feature, _ = self.encode_mask(input_ids, attention_mask, row_template=task_ids)
        vocab = self.vocab_scores(feature).float()  # q(v | i, P, O) over the whole vocabulary (Eq. 1)
        if candidate_ids is None:
            table = torch.tensor(cfg.template_label_word_ids, device=vocab.device)
            candidate_ids = table[task_ids]
        candidate_ids = candidate_ids.to(vocab.device)
        logits = vocab.gather(1, candidate_ids.clamp(min=0)).masked_fill(candidate_ids < 0, NO_WORD)
        loss = None
        if labels is not None:
            targets = candidate_ids.gather(1, labels[:, None]).squeeze(1)  # v*_i = V_i(y_i)
            per_row = F.cross_entropy(vocab, targets, reduction="none")
            is_ksmlm = task_ids == cfg.ksmlm_task
            loss = per_row[~is_ksmlm].mean() if (~is_ksmlm).any() else per_row.sum() * 0.0
            if is_ksmlm.any():
                loss = loss + cfg.ksmlm_weight * per_row[is_ksmlm].mean()
        return PromptModelOutput(loss=loss, logits=logits, features=feature)


def register() -> None:
    """Register `PromptModel` with transformers' Auto classes (entry point `plmkit.models: prompt`; the core runs
    it before loading a model), so a saved prompt model loads with `AutoModelForSequenceClassification`."""
    AutoConfig.register(PromptModelConfig.model_type, PromptModelConfig, exist_ok=True)
    AutoModel.register(PromptModelConfig, PromptModel, exist_ok=True)
    AutoModelForSequenceClassification.register(PromptModelConfig, PromptModel, exist_ok=True)


def _batches(model: PromptModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int, max_length: int):
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start : start + batch_size], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        yield enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)


@torch.no_grad()
def encode_anchors(model: PromptModel, batches: Iterable[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The [MASK] features (float32, not yet normalised), labels and example ids of collated training batches
    (dicts with input_ids, attention_mask, labels and `example_id`; without `example_id`, rows are numbered in
    order)."""
    was_training = model.training
    model.eval()
    hidden = model.config.backbone_config().hidden_size
    feats = [torch.zeros(0, hidden, device=model.device)]
    labels = [torch.zeros(0, dtype=torch.long, device=model.device)]
    ids = [torch.zeros(0, dtype=torch.long, device=model.device)]
    seen = 0
    for batch in batches:
        input_ids = batch["input_ids"].to(model.device)
        mask = batch.get("attention_mask")
        feature, _ = model.encode_mask(input_ids, mask.to(model.device) if mask is not None else None)
        feats.append(feature.float())
        labels.append(batch["labels"].to(model.device).long())
        rows = batch.get("example_id")
        ids.append(rows.to(model.device).long() if rows is not None
                   else torch.arange(seen, seen + len(input_ids), device=model.device))
        seen += len(input_ids)
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels), torch.cat(ids)


def compute_anchors(model: PromptModel, batches: Iterable[dict[str, Any]]) -> None:
    """Encode training batches (see `encode_anchors`) and store them as the model's anchors."""
    model.set_anchors(*encode_anchors(model, batches))


@torch.no_grad()
def predict(
    model: PromptModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int = 32, max_length: int = 128
) -> list[str]:
    """Label names for new texts (tokenized as the core does: truncation to `max_length`, special tokens)."""
    model.eval()
    out: list[str] = []
    for ids, mask in _batches(model, tokenizer, texts, batch_size, max_length):
        logits = model(input_ids=ids, attention_mask=mask).logits
        out += [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    return out
