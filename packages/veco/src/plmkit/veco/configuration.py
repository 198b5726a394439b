"""`VecoConfig`: the shape of a VECO model (Luo et al., ACL 2021, Sec. 3) and which of its parts a model has.

One config class serves every VECO model:

- the pre-training encoder and the NLU models: `num_hidden_layers` layers of self-attention -> plug-in
  cross-attention (its own LayerNorm) -> FFN, post-LN, XLM-R-shaped (learned positions with the fairseq padding
  offset, a LayerNorm on the embeddings), token embeddings multiplied by sqrt(hidden_size) as in the official NLG
  code (`veco_large` in AliceMind/VECO `NLG/fairseq/models/veco/model.py`: `no_scale_embedding=False`);
  `cross_attention=False` builds the layers without the plug-in module (a plug-out-only encoder);
- the NLG model (`is_encoder_decoder=True`): the encoder is the H-stream stack and `decoder_layers` S-stream layers
  with causal self-attention form the decoder (`keep_decoder_layers` records which pre-trained layers they were
  initialised from, as the official `--keep-decoder-layers`).

The defaults are the paper's small model (6 layers, hidden 768, FFN 3072, 12 heads), used for its from-scratch
ablations; `veco_large` is 24 layers, hidden 1024, FFN 4096, 16 heads.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from plmkit.core.errors import ConfigError

__all__ = ["VecoConfig"]


class VecoConfig(PretrainedConfig):
    model_type = "veco"

    def __init__(
        self,
        vocab_size: int = 8000,
        hidden_size: int = 768,
        num_hidden_layers: int = 6,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        activation_dropout: float = 0.0,
        max_position_embeddings: int = 514,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        scale_embedding: bool = True,
        cross_attention: bool = True,
        plug_in: bool = False,
        decoder_layers: int | None = None,
        keep_decoder_layers: list[int] | None = None,
        classifier_dropout: float | None = None,
        pad_token_id: int = 1,
        bos_token_id: int = 0,
        eos_token_id: int = 2,
        decoder_start_token_id: int | None = None,
        is_encoder_decoder: bool = False,
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
        self.activation_dropout = activation_dropout
        self.max_position_embeddings = max_position_embeddings
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.scale_embedding = scale_embedding
        self.cross_attention = cross_attention
        self.plug_in = plug_in
        self.decoder_layers = decoder_layers
        self.keep_decoder_layers = list(keep_decoder_layers) if keep_decoder_layers is not None else None
        self.classifier_dropout = classifier_dropout
        super().__init__(
            pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
            decoder_start_token_id=decoder_start_token_id, is_encoder_decoder=is_encoder_decoder,
            tie_word_embeddings=tie_word_embeddings, **kwargs,
        )
        self.check()

    @property
    def embed_scale(self) -> float:
        return float(self.hidden_size) ** 0.5 if self.scale_embedding else 1.0

    @property
    def position_offset(self) -> int:
        """The first position row (fairseq's `padding_idx + 1`, as XLM-R): pad=1 makes it 2, BART's offset."""
        return int(self.pad_token_id) + 1

    def check(self) -> None:
        """`ConfigError` (one line) for shapes that cannot make a model."""
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                              f"{self.num_attention_heads}")
        if self.plug_in and not self.cross_attention:
            raise ConfigError("plug_in=true needs the plug-in cross-attention, but this VECO model has no "
                              "cross-attention weights (cross_attention=false): use the plug-out model (plug_in=false) "
                              "or a checkpoint pre-trained with CA-MLM")
        if self.is_encoder_decoder:
            if not self.decoder_layers or self.decoder_layers < 1:
                raise ConfigError(f"an encoder-decoder VECO needs decoder_layers >= 1, got {self.decoder_layers}")
            if self.keep_decoder_layers is not None:
                if len(self.keep_decoder_layers) != self.decoder_layers:
                    raise ConfigError(f"keep_decoder_layers {self.keep_decoder_layers} names "
                                      f"{len(self.keep_decoder_layers)} layers for decoder_layers={self.decoder_layers}")
        if self.max_position_embeddings <= self.position_offset:
            raise ConfigError(f"max_position_embeddings {self.max_position_embeddings} leaves no position after the "
                              f"padding offset {self.position_offset}")
