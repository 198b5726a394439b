"""Exports to plain transformers classes, which load without plmkit-veco.

- Plug-out (Sec. 3.3, NLU): the H-stream is an XLM-R encoder. `to_xlmr` gives `XLMRobertaModel` (from `VecoModel`),
  `XLMRobertaForSequenceClassification` (from a plug-out `VecoForSequenceClassification`) or
  `XLMRobertaForMaskedLM` (from `VecoForPreTraining`); the cross-attention is dropped. VECO scales the token
  embeddings by sqrt(d) (the official NLG code's `no_scale_embedding=False`); XLM-R does not, so the scale is folded
  into the exported word embeddings (XLM-R's single token type gets a zero embedding). The masked-LM head keeps the
  unscaled matrix, so its decoder is untied there (`tie_word_embeddings=False`).
- NLG: `to_bart` gives `BartForConditionalGeneration` (post-LN, `layernorm_embedding`, `scale_embedding`, learned
  positions with offset 2, which is fairseq's padding offset for pad id 1), with the generation config (start and
  stop at the target language token). The layer module names are BART's (and fairseq's), so layers copy one to one.

Outputs equal VECO's for right-padded inputs (BART numbers positions by index, XLM-R and VECO's encoder from the
padding; both agree when padding is on the right, the tokenizers' default).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    PreTrainedModel,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaForSequenceClassification,
    XLMRobertaModel,
)

from plmkit.core.errors import ConfigError
from plmkit.veco.configuration import VecoConfig
from plmkit.veco.modeling import (
    VecoForConditionalGeneration,
    VecoForPreTraining,
    VecoForSequenceClassification,
    VecoModel,
)

__all__ = ["export_plain", "to_bart", "to_xlmr", "xlmr_config"]

def xlmr_config(config: VecoConfig, **extra: object) -> XLMRobertaConfig:
    labels = {"id2label": config.id2label, "label2id": config.label2id, "problem_type": config.problem_type}
    return XLMRobertaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act, hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=config.max_position_embeddings, type_vocab_size=1,
        initializer_range=config.initializer_range, layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        classifier_dropout=config.classifier_dropout, **labels, **extra,
    )


def _xlmr_encoder_state(veco: VecoModel) -> dict[str, torch.Tensor]:
    e = veco.embeddings
    state = {
        "embeddings.word_embeddings.weight": e.word_embeddings.weight * e.embed_scale,
        "embeddings.position_embeddings.weight": e.position_embeddings.weight,
        "embeddings.token_type_embeddings.weight": torch.zeros(1, veco.config.hidden_size),
        "embeddings.LayerNorm.weight": e.LayerNorm.weight,
        "embeddings.LayerNorm.bias": e.LayerNorm.bias,
    }
    names = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
             "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
             "self_attn_layer_norm": "attention.output.LayerNorm", "fc1": "intermediate.dense",
             "fc2": "output.dense", "final_layer_norm": "output.LayerNorm"}
    for i, layer in enumerate(veco.layers):
        for ours, theirs in names.items():
            module = layer.get_submodule(ours)
            for p in ("weight", "bias"):
                state[f"encoder.layer.{i}.{theirs}.{p}"] = getattr(module, p)
    return {k: v.detach().clone() for k, v in state.items()}


def _load(model: PreTrainedModel, state: dict[str, torch.Tensor], allowed_missing: tuple[str, ...] = ()) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(allowed_missing)]
    if missing or unexpected:
        raise RuntimeError(f"export does not fit {type(model).__name__}: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")


def to_xlmr(model: VecoModel | VecoForSequenceClassification | VecoForPreTraining) -> PreTrainedModel:
    """The plug-out H-stream as plain XLM-R (module docstring)."""
    if isinstance(model, VecoForSequenceClassification):
        if model.config.plug_in:
            raise ConfigError("a plug-in classifier reads [H; S]: only a plug-out VECO (plug_in=false) is an XLM-R "
                              "model")
        out = XLMRobertaForSequenceClassification(xlmr_config(model.config))
        state = {f"roberta.{k}": v for k, v in _xlmr_encoder_state(model.veco).items()}
        state.update({f"classifier.{k}": v.detach().clone() for k, v in model.classifier.state_dict().items()})
        _load(out, state)
    elif isinstance(model, VecoForPreTraining):
        out = XLMRobertaForMaskedLM(xlmr_config(model.config, tie_word_embeddings=False))
        state = {f"roberta.{k}": v for k, v in _xlmr_encoder_state(model.veco).items()}
        head = model.lm_head
        state.update({
            "lm_head.dense.weight": head.dense.weight, "lm_head.dense.bias": head.dense.bias,
            "lm_head.layer_norm.weight": head.layer_norm.weight, "lm_head.layer_norm.bias": head.layer_norm.bias,
            "lm_head.decoder.weight": head.decoder.weight, "lm_head.decoder.bias": head.bias, "lm_head.bias": head.bias,
        })
        _load(out, {k: v.detach().clone() for k, v in state.items()})
    elif isinstance(model, VecoModel):
        out = XLMRobertaModel(xlmr_config(model.config), add_pooling_layer=False)
        _load(out, _xlmr_encoder_state(model))
    else:
        raise ConfigError(f"to_xlmr exports VECO encoders; got {type(model).__name__}")
    return out.eval() if not model.training else out


def to_bart(model: VecoForConditionalGeneration) -> BartForConditionalGeneration:
    """The NLG model as `BartForConditionalGeneration` (module docstring)."""
    if not isinstance(model, VecoForConditionalGeneration):
        raise ConfigError(f"to_bart exports VecoForConditionalGeneration; got {type(model).__name__}")
    c = model.config
    if c.pad_token_id != 1:
        raise ConfigError(f"BART numbers positions from 2 (fairseq's offset for pad id 1); this model's pad id is "
                          f"{c.pad_token_id}")
    if abs(c.layer_norm_eps - 1e-5) > 1e-12:
        raise ConfigError(f"BART's LayerNorms use eps 1e-5; this model uses {c.layer_norm_eps}")
    config = BartConfig(
        vocab_size=c.vocab_size, d_model=c.hidden_size, encoder_layers=c.num_hidden_layers,
        decoder_layers=c.decoder_layers, encoder_attention_heads=c.num_attention_heads,
        decoder_attention_heads=c.num_attention_heads, encoder_ffn_dim=c.intermediate_size,
        decoder_ffn_dim=c.intermediate_size, activation_function=c.hidden_act, dropout=c.hidden_dropout_prob,
        attention_dropout=c.attention_probs_dropout_prob, activation_dropout=c.activation_dropout,
        max_position_embeddings=c.max_position_embeddings - 2, init_std=c.initializer_range,
        scale_embedding=c.scale_embedding, pad_token_id=c.pad_token_id, bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id, decoder_start_token_id=c.decoder_start_token_id, forced_eos_token_id=None,
        forced_bos_token_id=None, tie_word_embeddings=True,
    )
    out = BartForConditionalGeneration(config)
    m = model.model
    state: dict[str, torch.Tensor] = {"model.shared.weight": m.shared.weight}
    for side, stack in (("encoder", m.encoder), ("decoder", m.decoder)):
        state[f"model.{side}.embed_positions.weight"] = stack.embeddings.position_embeddings.weight
        for p in ("weight", "bias"):
            state[f"model.{side}.layernorm_embedding.{p}"] = getattr(stack.embeddings.LayerNorm, p)
        for i, layer in enumerate(stack.layers):
            for k, v in layer.state_dict().items():
                state[f"model.{side}.layers.{i}.{k}"] = v
    _load(out, {k: v.detach().clone() for k, v in state.items()},
          ("model.encoder.embed_tokens", "model.decoder.embed_tokens", "lm_head", "final_logits_bias"))
    out.tie_weights()
    for key in ("decoder_start_token_id", "eos_token_id", "pad_token_id", "bos_token_id"):
        setattr(out.generation_config, key, getattr(model.generation_config, key))
    out.generation_config.forced_eos_token_id = None
    return out.eval() if not model.training else out


def export_plain(model: nn.Module) -> nn.Module:
    """The plain-transformers form of a VECO model (anything else is returned unchanged): XLM-R for encoders
    (plug-out), BART for the NLG model. A plug-in classifier has no plain counterpart and stays a VECO model."""
    if isinstance(model, VecoForConditionalGeneration):
        return to_bart(model)
    if isinstance(model, VecoForSequenceClassification) and model.config.plug_in:
        return model
    if isinstance(model, (VecoModel, VecoForSequenceClassification, VecoForPreTraining)):
        return to_xlmr(model)
    return model

