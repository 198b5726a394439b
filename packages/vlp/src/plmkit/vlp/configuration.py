"""`SemVLPConfig`: a BERT-shaped trunk, a timm image encoder, and where the cross-modal attention plugs in."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from plmkit.core.errors import ConfigError

__all__ = ["MODES", "SemVLPConfig"]

MODES = ("single", "two")
CROSS_KEYS = ("self_attention", "layer_input")


class SemVLPConfig(PretrainedConfig):
    """SemVLP (Li et al., 2021): one shared transformer trunk for text and image tokens, a pluggable cross-modal
    attention in the top `cross_attention_layers` layers, single- and two-stream modes.

    Trunk (BERT's names and defaults of MiniLM-L6: vocab_size ... pad_token_id).
    Image encoder: `timm_model_name` with `timm_model_args` (random init, `pretrained=False`), images resized to
    `image_size` pixels; its `forward_features` grid becomes the image tokens, average-pooled to
    `region_grid` x `region_grid` regions when `region_grid` > 0; `max_grid_size` rows/columns of 2-D position
    embeddings. `visual_feature_dim` is the encoder's feature width (filled in when the model is built).
    Cross-modal attention: in the top `cross_attention_layers` layers, between self-attention and the FFN, one module
    per layer shared by both directions, with its own LayerNorm; its keys/values are the other modality's
    self-attention output in the same layer (`cross_attention_keys="self_attention"`) or the layer's input
    (`"layer_input"`, LXMERT's order). `default_mode` ("single" or "two") is the forward's mode when none is given.
    Heads: `codebook_size` classes of the masked visual token classification (0: none), `num_answers` of the QA head
    (0: none), `num_labels` for classification.
    """

    model_type = "semvlp"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 384,
        num_hidden_layers: int = 6,
        num_attention_heads: int = 12,
        intermediate_size: int = 1536,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        timm_model_name: str = "resnet18",
        timm_model_args: dict[str, Any] | None = None,
        image_size: int = 64,
        region_grid: int = 0,
        max_grid_size: int = 32,
        cross_attention_layers: int = 2,
        cross_attention_keys: str = "self_attention",
        default_mode: str = "single",
        visual_feature_dim: int | None = None,
        codebook_size: int = 64,
        num_answers: int = 0,
        tie_word_embeddings: bool = True,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.timm_model_name = timm_model_name
        self.timm_model_args = dict(timm_model_args or {})
        self.image_size = image_size
        self.region_grid = region_grid
        self.max_grid_size = max_grid_size
        self.cross_attention_layers = cross_attention_layers
        self.cross_attention_keys = cross_attention_keys
        self.default_mode = default_mode
        self.visual_feature_dim = visual_feature_dim
        self.codebook_size = codebook_size
        self.num_answers = num_answers
        self.tie_word_embeddings = tie_word_embeddings  # the masked-LM decoder is the word embedding matrix
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    def check(self) -> None:
        """Raise `ConfigError` naming the option when a value cannot build a model."""
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                              f"{self.num_attention_heads}")
        if not 0 <= self.cross_attention_layers <= self.num_hidden_layers:
            raise ConfigError(f"cross_attention_layers must be in [0, num_hidden_layers={self.num_hidden_layers}], got "
                              f"{self.cross_attention_layers}")
        if self.cross_attention_keys not in CROSS_KEYS:
            raise ConfigError(f"cross_attention_keys must be one of {list(CROSS_KEYS)}, got {self.cross_attention_keys!r}")
        if self.default_mode not in MODES:
            raise ConfigError(f"default_mode must be one of {list(MODES)}, got {self.default_mode!r}")
        if self.type_vocab_size < 2:
            raise ConfigError("type_vocab_size must be >= 2 (type 1 marks the image tokens)")
        if self.image_size < 8:
            raise ConfigError(f"image_size must be >= 8 pixels, got {self.image_size}")
        if self.region_grid < 0 or self.region_grid > self.max_grid_size:
            raise ConfigError(f"region_grid must be in [0, max_grid_size={self.max_grid_size}], got {self.region_grid}")
        if self.codebook_size < 0 or self.codebook_size == 1:
            raise ConfigError(f"codebook_size must be 0 (no codebook head) or >= 2, got {self.codebook_size}")
        if self.num_answers < 0:
            raise ConfigError(f"num_answers must be >= 0, got {self.num_answers}")
