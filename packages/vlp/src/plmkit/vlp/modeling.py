"""SemVLP models (Li et al., "SemVLP: Vision-Language Pre-training by Aligning Semantics at Multiple Levels", 2021),
as transformers `PreTrainedModel`s registered with the Auto classes (`register`, entry point `plmkit.models: semvlp`).

Inputs. Text: `[CLS] w_1 .. w_n [SEP]` with BERT's embeddings (word + position + token type 0, LayerNorm). Image: the
timm encoder's `forward_features` grid (optionally average-pooled to R x R regions), each cell one token:
    v_(r,c) = LN_img(W f_(r,c) + row_r + col_c + type_1)                                     (2-D positions)
the grid analogue of LXMERT/StructVBERT's (LN(W feat) + LN(W box)) / 2 of detector regions (StructVBERT,
alibaba/AliceMind StructVBERT/lxrt/modeling.py, VisualFeatEncoder). A masked visual token has its feature f zeroed
before the projection, as LXMERT masks regions.

The trunk is one BERT-shaped stack (BERT's parameter names, so MiniLM's weights load into it) run on the
concatenation x = [text; image] in both modes (Sec. 3 of the paper):
- single-stream: full self-attention over [CLS] text [SEP] image (padding excluded);
- two-stream: the same layers, but self-attention is block-diagonal (text attends to text, image to image: each
  modality goes through the shared layers on its own), and in the top k = `cross_attention_layers` layers a
  cross-modal attention is plugged in between self-attention and the FFN. With T, V the text and image states
  entering layer l:
      T' = LN_1(T + SA(T, T)),              V' = LN_1(V + SA(V, V))                 (shared self-attention)
      T'' = LN_x(T' + CA(T', K_V)),         V'' = LN_x(V' + CA(V', K_T))            (one CA for both directions)
      T_l = LN_2(T'' + FFN(T'')),           V_l = LN_2(V'' + FFN(V''))              (shared FFN)
  with K_V = V', K_T = T' (`cross_attention_keys="self_attention"`) or K_V = V, K_T = T ("layer_input": the other
  modality at layer l-1, as LXMERT's cross-attention reads it). CA has its own query/key/value/output weights and
  its own LayerNorm LN_x; in single-stream mode it is unplugged (the layer is a plain BERT layer).
Both directions of CA are one attention call over x with the "other modality" mask, so a two-stream layer costs one
self-attention, one cross-attention and one FFN pass over the T + V tokens.

Heads (`SemVLPForPreTraining`): masked-LM (BERT's transform, decoder tied to the word embeddings), masked visual
feature regression and codebook classification (LXMERT's BertVisualObjHead shape: a transform then one linear per
target), image-text matching on the pooled [CLS] (BERT's pooler), and LXMERT's QA head. `SemVLPForSequenceClassification`
puts LXMERT's answer-head MLP on the pooled [CLS] (fine-tuning in either mode, `config.default_mode`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import ModelOutput

from plmkit.core.errors import ConfigError
from plmkit.vlp.configuration import MODES, SemVLPConfig
from plmkit.vlp.images import create_backbone, grid_features

__all__ = [
    "SemVLPForPreTraining",
    "SemVLPForSequenceClassification",
    "SemVLPModel",
    "SemVLPModelOutput",
    "SemVLPPreTrainedModel",
    "SemVLPPreTrainingOutput",
    "attention_masks",
    "register",
]

TEXT, IMAGE = 0, 1


# ---------------------------------------------------------------------------------------------------------------
# Attention masks
# ---------------------------------------------------------------------------------------------------------------
def attention_masks(text_mask: torch.Tensor | None, image_mask: torch.Tensor | None, mode: str,
                    cross: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Boolean masks [B, 1, L, L] (True: the query row may attend to the key column) over x = [text; image].

    Returns (self-attention mask, cross-attention mask or None). Single-stream: every query attends to every
    non-padding key. Two-stream: self-attention within each modality; the cross-attention mask (when `cross` and
    both modalities are present) lets each query attend only to the other modality's non-padding keys.
    """
    parts = [m for m in (text_mask, image_mask) if m is not None]
    keys = torch.cat([m.bool() for m in parts], dim=1)  # [B, L]
    batch, length = keys.shape
    valid = keys[:, None, None, :].expand(batch, 1, length, length)
    if mode == "single" or len(parts) == 1:
        return valid, None
    kinds = torch.cat([torch.full((m.shape[1],), kind, device=keys.device)
                       for kind, m in ((TEXT, text_mask), (IMAGE, image_mask))])
    same = kinds[:, None] == kinds[None, :]  # [L, L]
    self_mask = valid & same
    return self_mask, (valid & ~same) if cross else None


# ---------------------------------------------------------------------------------------------------------------
# Building blocks (BERT's parameter names)
# ---------------------------------------------------------------------------------------------------------------
class SemVLPEmbeddings(nn.Module):
    """BERT's text embeddings plus the image-token embedding of the module docstring."""

    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.image_projection = nn.Linear(config.visual_feature_dim, h)
        self.image_row_embeddings = nn.Embedding(config.max_grid_size, h)
        self.image_col_embeddings = nn.Embedding(config.max_grid_size, h)
        self.image_LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.max_grid = config.max_grid_size

    def text(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None] + self.token_type_embeddings(types)
        return self.dropout(self.LayerNorm(x))

    def image(self, grid: torch.Tensor, visual_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens [B, h*w, H] of a feature grid [B, h, w, C] (row-major); `visual_mask` [B, h*w] zeroes features."""
        batch, rows, cols, dim = grid.shape
        if rows > self.max_grid or cols > self.max_grid:
            raise ConfigError(f"the image encoder gives a {rows}x{cols} grid, more than max_grid_size={self.max_grid}: "
                              f"raise max_grid_size, lower image_size or set region_grid")
        feats = grid.reshape(batch, rows * cols, dim)
        if visual_mask is not None:
            feats = feats.masked_fill(visual_mask[..., None].bool(), 0.0)
        r = torch.arange(rows, device=grid.device).repeat_interleave(cols)
        c = torch.arange(cols, device=grid.device).repeat(rows)
        image_type = self.token_type_embeddings.weight[IMAGE]
        x = self.image_projection(feats) + self.image_row_embeddings(r)[None] + self.image_col_embeddings(c)[None] + image_type
        return self.dropout(self.image_LayerNorm(x))


class SemVLPSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention of `hidden` (queries) over `context` (keys and values)."""

    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, h // config.num_attention_heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.dropout_p = config.attention_probs_dropout_prob

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q, k, v = self._heads(self.query(hidden)), self._heads(self.key(context)), self._heads(self.value(context))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
        return out.transpose(1, 2).reshape(hidden.shape)


class SemVLPAttentionOutput(nn.Module):
    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, attended: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(attended)))


class SemVLPAttention(nn.Module):
    """Attention sub-layer: LN(x + Dropout(W_o Attn(x, context)))."""

    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__()
        self.self = SemVLPSelfAttention(config)
        self.output = SemVLPAttentionOutput(config)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(hidden, context, mask), hidden)


class SemVLPIntermediate(nn.Module):
    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class SemVLPOutput(nn.Module):
    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class SemVLPLayer(nn.Module):
    """A BERT layer with an optional cross-modal attention between self-attention and the FFN (module docstring)."""

    def __init__(self, config: SemVLPConfig, cross: bool) -> None:
        super().__init__()
        self.attention = SemVLPAttention(config)
        self.crossattention = SemVLPAttention(config) if cross else None
        self.intermediate = SemVLPIntermediate(config)
        self.output = SemVLPOutput(config)
        self.keys_from_input = config.cross_attention_keys == "layer_input"

    def forward(self, hidden: torch.Tensor, self_mask: torch.Tensor | None,
                cross_mask: torch.Tensor | None = None) -> torch.Tensor:
        attended = self.attention(hidden, hidden, self_mask)
        if cross_mask is not None and self.crossattention is not None:
            attended = self.crossattention(attended, hidden if self.keys_from_input else attended, cross_mask)
        return self.output(self.intermediate(attended), attended)


class SemVLPEncoder(nn.Module):
    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__()
        first_cross = config.num_hidden_layers - config.cross_attention_layers
        self.layer = nn.ModuleList(SemVLPLayer(config, cross=i >= first_cross) for i in range(config.num_hidden_layers))
        self.first_cross = first_cross

    def forward(self, hidden: torch.Tensor, self_mask: torch.Tensor | None, cross_mask: torch.Tensor | None,
                start: int = 0, end: int | None = None) -> torch.Tensor:
        for layer in self.layer[start:end]:
            hidden = layer(hidden, self_mask, cross_mask)
        return hidden


class SemVLPPooler(nn.Module):
    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden[:, 0]))


class SemVLPImageEncoder(nn.Module):
    """The timm model (`backbone`) and the optional region pooling: pixels [B, 3, S, S] -> grid [B, h, w, C]."""

    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__()
        self.backbone = create_backbone(config.timm_model_name, config.timm_model_args, config.image_size)
        self.region_grid = config.region_grid

    @property
    def feature_dim(self) -> int:
        return int(self.backbone.num_features)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        grid = grid_features(self.backbone, pixel_values)
        if self.region_grid:
            grid = F.adaptive_avg_pool2d(grid.permute(0, 3, 1, 2), self.region_grid).permute(0, 2, 3, 1)
        return grid


class SemVLPHeadTransform(nn.Module):
    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class SemVLPLMHead(nn.Module):
    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__()
        self.transform = SemVLPHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class SemVLPVisualHead(nn.Module):
    """A transform, then the feature regression (to the encoder's width) and the codebook classes."""

    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__()
        self.transform = SemVLPHeadTransform(config)
        self.regression = nn.Linear(config.hidden_size, config.visual_feature_dim)
        self.codebook = nn.Linear(config.hidden_size, config.codebook_size) if config.codebook_size else None


class SemVLPAnswerHead(nn.Module):
    """LXMERT's answer head (and classifier): Linear(H, 2H), GeLU, LayerNorm, Linear(2H, n)."""

    def __init__(self, config: SemVLPConfig, n: int) -> None:
        super().__init__()
        h = config.hidden_size
        self.dense = nn.Linear(h, 2 * h)
        self.act = ACT2FN["gelu"]
        self.LayerNorm = nn.LayerNorm(2 * h, eps=config.layer_norm_eps)
        self.out = nn.Linear(2 * h, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.LayerNorm(self.act(self.dense(x))))


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------
class SemVLPPreTrainedModel(PreTrainedModel):
    config_class = SemVLPConfig
    config: SemVLPConfig
    base_model_prefix = "semvlp"
    main_input_name = "input_ids"
    _no_split_modules = ["SemVLPLayer"]

    # transformers' default `_init_weights` is BERT's (normal(0, initializer_range) linears and embeddings, unit
    # LayerNorms); the timm encoder keeps timm's own initialisation (its modules are marked initialised when built).

    @classmethod
    def from_text_model(cls, text_model: str = "minilm", seed: int = 0, **config_options: Any) -> tuple[Any, Any]:
        """A model whose trunk (embeddings, layers' self-attention and FFN, pooler) is copied from a BERT-shaped text
        model (`plmkit.core.models.load_model` name: an alias such as minilm, a folder, a hub id); the image encoder,
        cross-modal attention and heads are random (seeded with `seed`). Returns (model, tokenizer)."""
        from plmkit.core.models import load_model

        text, tokenizer = load_model(text_model, kind="base")
        tc = text.config
        if getattr(tc, "model_type", None) not in ("bert",):
            raise ConfigError(f"from_text_model needs a BERT-shaped text model; {text_model!r} is {tc.model_type}")
        shape = {k: getattr(tc, k) for k in (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
            "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
            "layer_norm_eps", "pad_token_id")}
        config = SemVLPConfig(**{**shape, **config_options})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config)
        model.load_text_weights(text)
        return model, tokenizer

    def load_text_weights(self, text: nn.Module) -> list[str]:
        """Copy a BERT model's weights into the trunk (same names); returns the trunk parameters left as they were
        (image embeddings, cross-modal attention). A text parameter the trunk has no place for is an error."""
        source = {k: v for k, v in text.state_dict().items() if not k.endswith("position_ids")}
        target = self.base_model.state_dict()
        unplaced = [k for k in source if k not in target or target[k].shape != source[k].shape]
        if unplaced:
            raise ConfigError(f"text weights that do not fit the SemVLP trunk: {unplaced[:5]}")
        self.base_model.load_state_dict(source, strict=False)
        return sorted(set(target) - set(source))


@dataclass
class SemVLPModelOutput(ModelOutput):
    """`last_hidden_state` [B, T + V, H] over x = [text; image]; `text_length` T; `pooler_output` (BERT's pooler on
    [CLS], when there is text)."""

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    text_length: int | None = None

    @property
    def text_hidden_state(self) -> torch.Tensor:
        return self.last_hidden_state[:, : self.text_length or 0]

    @property
    def image_hidden_state(self) -> torch.Tensor:
        return self.last_hidden_state[:, self.text_length or 0 :]


class SemVLPModel(SemVLPPreTrainedModel):
    """Embeddings, the timm image encoder, the shared trunk with its pluggable cross-modal attention, BERT's pooler."""

    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__(config)
        config.check()
        self.image_encoder = SemVLPImageEncoder(config)
        for module in self.image_encoder.modules():
            module._is_hf_initialized = True  # keep timm's own initialisation
        if config.visual_feature_dim is None:
            config.visual_feature_dim = self.image_encoder.feature_dim
        elif config.visual_feature_dim != self.image_encoder.feature_dim:
            raise ConfigError(f"visual_feature_dim {config.visual_feature_dim} does not match {config.timm_model_name}'s "
                              f"{self.image_encoder.feature_dim} features")
        self.embeddings = SemVLPEmbeddings(config)
        self.encoder = SemVLPEncoder(config)
        self.pooler = SemVLPPooler(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    # -- pieces (retrieval reuses them) ------------------------------------------------------------------------
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The image encoder's grid [B, h, w, C] (before masking and projection)."""
        return self.image_encoder(pixel_values)

    def resolve_mode(self, mode: str | None) -> str:
        mode = mode or self.config.default_mode
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}, got {mode!r}")
        return mode

    def run_layers(self, hidden: torch.Tensor, text_mask: torch.Tensor | None, image_mask: torch.Tensor | None,
                   mode: str, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Layers start..end of the trunk on x = [text; image] (either part may be absent)."""
        both = text_mask is not None and image_mask is not None
        if mode == "two" and both and self.config.cross_attention_layers == 0 and (end is None or end > start):
            raise ConfigError("two-stream mode needs cross_attention_layers >= 1 (otherwise text and image never meet)")
        self_mask, cross_mask = attention_masks(text_mask, image_mask, mode, cross=True)
        return self.encoder(hidden, self_mask, cross_mask, start, end)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        mode: str | None = None,
        visual_mask: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SemVLPModelOutput:
        """`input_ids` and/or images (`pixel_values` [B, 3, S, S], or the encoder's grid as `image_features`);
        `mode` "single" or "two" (default `config.default_mode`); `visual_mask` [B, V] bool: image tokens whose
        features are zeroed (masked visual modelling)."""
        mode = self.resolve_mode(mode)
        parts, masks = [], []
        text_mask = image_mask = None
        if input_ids is not None:
            parts.append(self.embeddings.text(input_ids, token_type_ids))
            text_mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            masks.append(text_mask)
        if image_features is None and pixel_values is not None:
            image_features = self.image_features(pixel_values)
        if image_features is not None:
            tokens = self.embeddings.image(image_features, visual_mask)
            parts.append(tokens)
            image_mask = torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)
        if not parts:
            raise ValueError("SemVLPModel needs input_ids, pixel_values or both")
        hidden = self.run_layers(torch.cat(parts, dim=1), text_mask, image_mask, mode)
        text_length = input_ids.shape[1] if input_ids is not None else 0
        pooled = self.pooler(hidden) if input_ids is not None else None
        return SemVLPModelOutput(last_hidden_state=hidden, pooler_output=pooled, text_length=text_length)


@dataclass
class SemVLPPreTrainingOutput(ModelOutput):
    """`loss`: the sum of the terms whose targets were given; each term also on its own (`itm_loss`, `mlm_loss`,
    `visual_regression_loss`, `visual_codebook_loss`, `qa_loss`); `logits`: image-text matching logits [B, 2]
    (class 1 = matched); `answer_logits` [B, num_answers] when there is a QA head."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    itm_loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    visual_regression_loss: torch.Tensor | None = None
    visual_codebook_loss: torch.Tensor | None = None
    qa_loss: torch.Tensor | None = None
    answer_logits: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None

    def losses(self) -> dict[str, torch.Tensor]:
        names = ("itm", "mlm", "visual_regression", "visual_codebook", "qa")
        return {n: getattr(self, f"{n}_loss") for n in names if getattr(self, f"{n}_loss") is not None}


def _zero(like: torch.Tensor) -> torch.Tensor:
    """0 connected to the graph (a term with nothing to predict in this batch)."""
    return like.sum() * 0.0


class SemVLPForPreTraining(SemVLPPreTrainedModel):
    """SemVLP with its pre-training heads: masked LM, masked visual regression and codebook classification, image-text
    matching on the pooled [CLS], and QA when `config.num_answers` > 0."""

    _tied_weights_keys = {"mlm_head.decoder.weight": "semvlp.embeddings.word_embeddings.weight"}

    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__(config)
        self.semvlp = SemVLPModel(config)
        self.mlm_head = SemVLPLMHead(config)
        self.visual_head = SemVLPVisualHead(config)
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.qa_head = SemVLPAnswerHead(config, config.num_answers) if config.num_answers else None
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.mlm_head.decoder = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        mode: str | None = None,
        visual_mask: torch.Tensor | None = None,
        itm_labels: torch.Tensor | None = None,
        mlm_targets: torch.Tensor | None = None,
        visual_targets: torch.Tensor | None = None,
        visual_codes: torch.Tensor | None = None,
        answer_targets: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SemVLPPreTrainingOutput:
        """Targets (each optional, each giving its loss): `itm_labels` [B] (1 matched, 0 not); `mlm_targets` [B, T]
        (-100 where nothing is predicted); `visual_targets` [B, V, C] and `visual_codes` [B, V] at the positions of
        `visual_mask`; `answer_targets` [B] (-100: no question; used on matched pairs only)."""
        out = self.semvlp(input_ids, attention_mask, token_type_ids, pixel_values, mode, visual_mask)
        pooled = out.pooler_output
        itm_logits = self.itm_head(pooled) if pooled is not None else None
        result = SemVLPPreTrainingOutput(logits=itm_logits, pooler_output=pooled)
        if itm_labels is not None and itm_logits is not None:
            result.itm_loss = F.cross_entropy(itm_logits.float(), itm_labels.long())
        if mlm_targets is not None and input_ids is not None:
            chosen = mlm_targets != -100
            text = out.text_hidden_state
            if chosen.any():
                logits = self.mlm_head(text[chosen])
                result.mlm_loss = F.cross_entropy(logits.float(), mlm_targets[chosen])
            else:
                result.mlm_loss = _zero(self.mlm_head(text[:, :1]))
        if visual_mask is not None and (visual_targets is not None or visual_codes is not None):
            image = out.image_hidden_state
            chosen = visual_mask.bool()
            states = self.visual_head.transform(image[chosen] if chosen.any() else image[:, :1].reshape(-1, image.shape[-1]))
            if visual_targets is not None:
                pred = self.visual_head.regression(states).float()
                result.visual_regression_loss = (
                    F.mse_loss(pred, visual_targets[chosen].float()) if chosen.any() else _zero(pred))
            if visual_codes is not None and self.visual_head.codebook is not None:
                logits = self.visual_head.codebook(states).float()
                result.visual_codebook_loss = (
                    F.cross_entropy(logits, visual_codes[chosen].long()) if chosen.any() else _zero(logits))
        if self.qa_head is not None and pooled is not None:
            result.answer_logits = self.qa_head(pooled)
            if answer_targets is not None:
                targets = answer_targets.long()
                if itm_labels is not None:
                    targets = torch.where(itm_labels.bool(), targets, torch.full_like(targets, -100))
                result.qa_loss = (F.cross_entropy(result.answer_logits.float(), targets, ignore_index=-100)
                                  if (targets != -100).any() else _zero(result.answer_logits))
        terms = list(result.losses().values())
        if terms:
            result.loss = torch.stack(terms).sum()
        return result


class SemVLPForSequenceClassification(SemVLPPreTrainedModel):
    """Classification of an image-text pair from the pooled [CLS] (LXMERT's answer-head MLP), in either mode."""

    def __init__(self, config: SemVLPConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.semvlp = SemVLPModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = SemVLPAnswerHead(config, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        mode: str | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        out = self.semvlp(input_ids, attention_mask, token_type_ids, pixel_values, mode)
        if out.pooler_output is None:
            raise ValueError("SemVLPForSequenceClassification needs text (input_ids): it classifies the pooled [CLS]")
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits)


def register() -> None:
    """Register SemVLP with transformers' Auto classes (entry point `plmkit.models: semvlp`; the core runs it before
    it loads a model): AutoModel -> SemVLPModel; AutoModelForPreTraining and AutoModelForMaskedLM (the core's
    `load_model` kind "masked-lm", which the image_text task uses) -> SemVLPForPreTraining;
    AutoModelForSequenceClassification -> SemVLPForSequenceClassification."""
    AutoConfig.register(SemVLPConfig.model_type, SemVLPConfig, exist_ok=True)
    AutoModel.register(SemVLPConfig, SemVLPModel, exist_ok=True)
    AutoModelForPreTraining.register(SemVLPConfig, SemVLPForPreTraining, exist_ok=True)
    AutoModelForMaskedLM.register(SemVLPConfig, SemVLPForPreTraining, exist_ok=True)
    AutoModelForSequenceClassification.register(SemVLPConfig, SemVLPForSequenceClassification, exist_ok=True)
