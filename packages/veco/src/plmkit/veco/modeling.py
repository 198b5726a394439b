"""VECO models (Luo et al., "VECO: Variable and Flexible Cross-lingual Pre-training for Language Understanding and
Generation", ACL 2021), HF-native: `PreTrainedModel`s that save and load with `from_pretrained`.

Every layer is self-attention -> plug-in cross-attention (with its own LayerNorm) -> FFN, post-LN (Sec. 3.1; the
sub-layer order and the module names follow the decoder layers of the official NLG checkpoint, AliceMind/VECO
`NLG/fairseq/models/veco/model.py`: `self_attn`, `encoder_attn` + `encoder_attn_layer_norm`, `fc1`/`fc2` +
`final_layer_norm`). E(.) is the scaled token embedding + position embedding + embedding LayerNorm. Two streams run
through the same layers (Sec. 3.2):

    H-stream (plug-out, theta_s):  A = LN(H + SA(H));  H' = LN(A + FFN(A))
    S-stream (plug-in, theta_s + theta_c):
                                   A = LN(S + SA(S));  C = LN_c(A + CA(Q=A, K=V=H_y^L));  S' = LN(C + FFN(C))

K/V of the S-stream's cross-attention are the paired sequence's LAST-layer H-stream output, the same memory for every
layer; one CA per layer serves both directions (x->y, y->x) and all languages.

- `VecoModel`: the stack (`forward(..., memory=None)` is the H-stream, with `memory` the S-stream);
- `VecoForPreTraining`: CA-MLM (Eq. 3: MLM on the H-stream plus MLM on the S-stream, for x and for y) with a
  RoBERTa-style LM head tied to the input embeddings; without a paired input it is a plain masked-LM model;
- `VecoForSequenceClassification`: plug-out (H-stream) or plug-in ([H_x; S_x], config `plug_in`);
- `VecoForConditionalGeneration`: encoder = the H-stream stack; decoder = S-stream layers with causal
  self-attention and cross-attention to the encoder output, initialised from pre-trained layers
  (`from_pretraining(..., keep_decoder_layers=...)`); shared embeddings; generation with a key/value cache.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GenerationMixin,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    Seq2SeqLMOutput,
    SequenceClassifierOutput,
)
from transformers.utils import ModelOutput

from plmkit.core.errors import ConfigError
from plmkit.veco.configuration import VecoConfig
from plmkit.veco.tokenization import VecoTokenizer

__all__ = [
    "OBJECTIVES",
    "VecoForConditionalGeneration",
    "VecoForPreTraining",
    "VecoForSequenceClassification",
    "VecoModel",
    "VecoModelOutput",
    "VecoPreTrainedModel",
    "VecoPreTrainingOutput",
    "register",
]

#: pre-training objectives: which passes each pair gets (the loss terms they give, for x and for y)
OBJECTIVES: dict[str, tuple[str, ...]] = {
    "veco": ("mlm", "ca_mlm"),  # the ACL version: MLM (SA+FFN) + CA-MLM (SA+CA+FFN), Eq. 3
    "mlm": ("mlm",),  # the H-stream only (an XLM-R-style MLM baseline on the same pairs)
    "ca_only": ("mlm", "ca_only"),  # ICLR-2021 version's CA+FFN pass (no self-attention) instead of SA+CA+FFN
    "iclr": ("mlm", "ca_only", "ca_mlm"),  # all three module combinations of the ICLR-2021 version
}


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------
def position_ids_from_input_ids(input_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """fairseq's `make_positions` (XLM-R's): non-pad tokens are numbered from padding_idx + 1, pads get padding_idx."""
    mask = input_ids.ne(padding_idx).int()
    return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx


class VecoEmbeddings(nn.Module):
    """E(x) = LayerNorm(sqrt(d) * tokens + positions); `word_embeddings` may be shared (NLG)."""

    def __init__(self, config: VecoConfig, word_embeddings: nn.Embedding | None = None) -> None:
        super().__init__()
        self.word_embeddings = word_embeddings if word_embeddings is not None else nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size,
                                                padding_idx=config.pad_token_id)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.padding_idx = config.pad_token_id
        self.embed_scale = config.embed_scale

    def forward(self, input_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, past_length: int | None = None) -> torch.Tensor:
        """Positions: from the padding (XLM-R) for an encoder; by index after `past_length` tokens for a decoder."""
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if position_ids is None:
            if past_length is not None or input_ids is None:
                start = self.padding_idx + 1 + (past_length or 0)
                position_ids = torch.arange(start, start + inputs_embeds.shape[1], device=inputs_embeds.device)
                position_ids = position_ids.unsqueeze(0).expand(inputs_embeds.shape[:2])
            else:
                position_ids = position_ids_from_input_ids(input_ids, self.padding_idx)
        hidden = inputs_embeds * self.embed_scale + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(hidden))


def key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, Tk] 1/0 padding mask -> [B, 1, 1, Tk] boolean (True = attend); None when nothing is masked."""
    if mask is None or bool(mask.all()):
        return None
    return mask.bool()[:, None, None, :]


class VecoAttention(nn.Module):
    """Multi-head attention (self or cross), through `F.scaled_dot_product_attention`; `cache` is a
    transformers `EncoderDecoderCache` during generation."""

    def __init__(self, config: VecoConfig, layer_idx: int | None = None, cross: bool = False) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, d // config.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.dropout = config.attention_probs_dropout_prob
        self.layer_idx, self.cross = layer_idx, cross

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, key_value: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                cache: EncoderDecoderCache | None = None) -> torch.Tensor:
        q = self._heads(self.q_proj(hidden))
        if cache is not None and self.cross and cache.is_updated.get(self.layer_idx):
            layer = cache.cross_attention_cache.layers[self.layer_idx]
            k, v = layer.keys, layer.values
        else:
            source = hidden if key_value is None else key_value
            k, v = self._heads(self.k_proj(source)), self._heads(self.v_proj(source))
            if cache is not None:
                part = cache.cross_attention_cache if self.cross else cache.self_attention_cache
                k, v = part.update(k, v, self.layer_idx)
                if self.cross:
                    cache.is_updated[self.layer_idx] = True
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(hidden.shape))


class VecoLayer(nn.Module):
    """SA -> (plug-in) CA with its own LayerNorm -> FFN, each post-LN (module docstring)."""

    def __init__(self, config: VecoConfig, layer_idx: int | None = None, cross_attention: bool | None = None) -> None:
        super().__init__()
        d = config.hidden_size
        self.self_attn = VecoAttention(config, layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        has_ca = config.cross_attention if cross_attention is None else cross_attention
        if has_ca:
            self.encoder_attn = VecoAttention(config, layer_idx, cross=True)
            self.encoder_attn_layer_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(d, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, d)
        self.final_layer_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.activation = ACT2FN[config.hidden_act]
        self.dropout, self.activation_dropout = config.hidden_dropout_prob, config.activation_dropout

    @property
    def has_cross_attention(self) -> bool:
        return hasattr(self, "encoder_attn")

    def _drop(self, x: torch.Tensor, p: float | None = None) -> torch.Tensor:
        return F.dropout(x, p=self.dropout if p is None else p, training=self.training)

    def attend_self(self, hidden: torch.Tensor, mask: torch.Tensor | None = None,
                    cache: EncoderDecoderCache | None = None, source: torch.Tensor | None = None) -> torch.Tensor:
        """The self-attention sub-layer, LN(hidden + SA(hidden)); keys and values from `source` when given."""
        attended = self.self_attn(hidden, key_value=source, mask=mask, cache=cache)
        return self.self_attn_layer_norm(hidden + self._drop(attended))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, self_attention: bool = True,
                cache: EncoderDecoderCache | None = None, positions: torch.Tensor | None = None,
                attended: torch.Tensor | None = None) -> torch.Tensor:
        """`positions` [B, m]: compute the output at those positions only ([B, m, d]); the self-attention's keys
        and values still read every position of `hidden`. `attended`: this layer's self-attention sub-layer output
        for `hidden`, computed already (then only CA and FFN run)."""
        if attended is not None:
            hidden = attended if positions is None else _gather(attended, positions)
        else:
            source = None
            if positions is not None:
                source, hidden = hidden, _gather(hidden, positions)
            if self_attention:
                hidden = self.attend_self(hidden, mask, cache, source)
        if memory is not None:
            attended = self.encoder_attn(hidden, key_value=memory, mask=memory_mask, cache=cache)
            hidden = self.encoder_attn_layer_norm(hidden + self._drop(attended))
        ffn = self.fc2(self._drop(self.activation(self.fc1(hidden)), self.activation_dropout))
        return self.final_layer_norm(hidden + self._drop(ffn))


def _gather(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """[B, T, d] at [B, m] positions -> [B, m, d]."""
    return hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))


class VecoLMHead(nn.Module):
    """RoBERTa's masked-LM head: dense -> GELU -> LayerNorm -> vocabulary (decoder tied to the input embeddings)."""

    def __init__(self, config: VecoConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(F.gelu(self.dense(features)))) + self.bias


class VecoClassificationHead(nn.Module):
    """XLM-R's sentence head on the first token (dense -> tanh -> out_proj); input 2d for plug-in ([H; S])."""

    def __init__(self, config: VecoConfig, input_size: int) -> None:
        super().__init__()
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dense = nn.Linear(input_size, config.hidden_size)
        self.dropout = nn.Dropout(p)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(features)))))


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------
class VecoPreTrainedModel(PreTrainedModel):
    config_class = VecoConfig
    config: VecoConfig
    base_model_prefix = "veco"
    supports_gradient_checkpointing = False
    _no_split_modules = ["VecoLayer"]

    def __init__(self, config: VecoConfig, *args: Any, **kwargs: Any) -> None:
        config.check()  # options set after the config was built (from_pretrained overrides) are checked here
        super().__init__(config, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, VecoLMHead):
            init.zeros_(module.bias)


class VecoModel(VecoPreTrainedModel):
    """The VECO stack: the H-stream without `memory`, the S-stream with it (module docstring)."""

    def __init__(self, config: VecoConfig, word_embeddings: nn.Embedding | None = None,
                 cross_attention: bool | None = None) -> None:
        super().__init__(config)
        self.embeddings = VecoEmbeddings(config, word_embeddings)
        self.layers = nn.ModuleList(
            [VecoLayer(config, i, cross_attention) for i in range(config.num_hidden_layers)])
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    @property
    def has_cross_attention(self) -> bool:
        return all(layer.has_cross_attention for layer in self.layers)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        self_attention: bool = True,
        output_positions: torch.Tensor | None = None,
        first_attended: torch.Tensor | None = None,
        return_first_attended: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> VecoModelOutput:
        """`memory` [B, Tm, d] (with `memory_mask` [B, Tm]) runs the S-stream; `self_attention=False` skips SA
        (the ICLR-2021 CA+FFN pass). `token_type_ids` are accepted and ignored (XLM-R has one type).

        `output_positions` [B, T] (bool): the last layer computes its output only at these positions (CA-MLM reads
        nothing else of the S-stream; its self-attention still reads every position), and `last_hidden_state` is
        [N, d], the rows of `hidden[output_positions]` in the same order. The same numbers as the full pass at
        those positions, for about a quarter less work per S-stream pass at 4 layers and 15% masking.

        `return_first_attended` also returns the first layer's self-attention sub-layer output (`first_attended`);
        given back as `first_attended` with the same input, the pass starts there (no embeddings, no first SA).
        The S-stream's first layer reads the same E(x) as the H-stream's, so CA-MLM runs that part once."""
        if memory is not None and not self.has_cross_attention:
            raise ConfigError("the S-stream (plug-in) needs cross-attention weights; this VECO model was built "
                              "without them (cross_attention=false)")
        if input_ids is not None and attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id).long()
        if output_hidden_states and (output_positions is not None or first_attended is not None):
            raise ValueError("output_positions / first_attended skip parts of the pass; they do not go with "
                             "output_hidden_states")
        if first_attended is not None and not self_attention:
            raise ValueError("first_attended is a self-attention output; self_attention=False skips that sub-layer")
        if first_attended is None:
            hidden = self.embeddings(input_ids, position_ids=position_ids, inputs_embeds=inputs_embeds)
        else:
            hidden = first_attended
        mask, mem_mask = key_mask(attention_mask), key_mask(memory_mask)
        positions = valid = None
        if output_positions is not None:
            positions, valid = _kept_positions(output_positions.bool())
        states = [hidden] if output_hidden_states else None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            at = positions if i == last else None
            if i == 0 and first_attended is None and return_first_attended and self_attention:
                first_attended = layer.attend_self(hidden, mask)
            attended = first_attended if i == 0 else None
            hidden = layer(hidden, mask, memory, mem_mask, self_attention, positions=at, attended=attended)
            if states is not None:
                states.append(hidden)
        if valid is not None:
            hidden = hidden[valid]
        return VecoModelOutput(last_hidden_state=hidden, hidden_states=tuple(states) if states else None,
                               first_attended=first_attended if return_first_attended else None)


def _kept_positions(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] bool -> ([B, m] the kept positions of each row in ascending order, padded; [B, m] which are real),
    m = the most kept positions in a row; `out[valid]` then lists the rows in `hidden[keep]` order."""
    counts = keep.sum(1)
    m = int(counts.max()) if keep.numel() else 0
    positions = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :m]
    valid = torch.arange(m, device=keep.device)[None, :] < counts[:, None]
    return positions, valid


@dataclass
class VecoModelOutput(BaseModelOutput):
    """`BaseModelOutput` plus, when asked, the first layer's self-attention sub-layer output (`first_attended`)."""

    first_attended: torch.Tensor | None = None


@dataclass
class VecoPreTrainingOutput(ModelOutput):
    """One CA-MLM step: the summed loss, its terms (training: `terms`, a dict of mean masked-token losses such as
    `mlm_x`, `ca_mlm_y`) and, for evaluation, per-example statistics [B, 3 * n_terms] (summed loss, masked tokens,
    correct predictions per term, in `term_names` order)."""

    loss: torch.Tensor | None = None
    stats: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] | None = None


def term_names(objective: str) -> list[str]:
    """The loss terms of an objective, in order: e.g. veco -> mlm_x, mlm_y, ca_mlm_x, ca_mlm_y."""
    return [f"{kind}_{side}" for kind in OBJECTIVES[objective] for side in ("x", "y")]


class VecoForPreTraining(VecoPreTrainedModel):
    """CA-MLM pre-training (module docstring). `forward(input_ids, ..., labels)` alone is a masked-LM model (the
    H-stream with the LM head, usable by the core's `masked_lm` task); with `pair_input_ids` / `pair_targets` it
    computes the objective's terms over the pair (x, y). The paired side's masked-token targets are `pair_targets`
    (no "label" in the name: transformers' Trainer treats every such forward argument as a label and computes no
    evaluation loss for batches without it, as the core `masked_lm` task's)."""

    _tied_weights_keys = {"lm_head.decoder.weight": "veco.embeddings.word_embeddings.weight"}

    def __init__(self, config: VecoConfig) -> None:
        super().__init__(config)
        self.veco = VecoModel(config)
        self.lm_head = VecoLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head.decoder = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pair_input_ids: torch.Tensor | None = None,
        pair_attention_mask: torch.Tensor | None = None,
        pair_targets: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        objective: str = "veco",
        detach_memory: bool = False,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> MaskedLMOutput | VecoPreTrainingOutput:
        if pair_input_ids is None:
            out = self.veco(input_ids, attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds)
            logits = self.lm_head(out.last_hidden_state)
            loss = None
            if labels is not None:
                loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1))
            return MaskedLMOutput(loss=loss, logits=logits)
        return self.pair_forward(input_ids, attention_mask, labels, pair_input_ids, pair_attention_mask,
                                 pair_targets, objective, detach_memory)

    def _masked_terms(self, rows: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-token losses [M], per-token correct [M]) of the masked positions' hidden states `rows` [M, d]: the
        LM head runs on those rows only, never on [B, T, V]."""
        logits = self.lm_head(rows).float()
        return F.cross_entropy(logits, targets, reduction="none"), logits.argmax(-1).eq(targets)

    def pair_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor,
                     pair_input_ids: torch.Tensor, pair_attention_mask: torch.Tensor | None,
                     pair_targets: torch.Tensor, objective: str = "veco",
                     detach_memory: bool = False) -> VecoPreTrainingOutput:
        """The objective's passes over the pair, batched: x and y go through each pass together ([x; y], 2B rows),
        the S-stream of x reading H_y^L and that of y reading H_x^L."""
        if objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
        if labels is None or pair_targets is None:
            raise ValueError("CA-MLM needs labels and pair_targets (-100 where a token is not masked)")
        pad = self.config.pad_token_id
        if attention_mask is None:
            attention_mask = input_ids.ne(pad).long()
        if pair_attention_mask is None:
            pair_attention_mask = pair_input_ids.ne(pad).long()
        batch = input_ids.shape[0]
        length = max(input_ids.shape[1], pair_input_ids.shape[1])

        def pad_to(t: torch.Tensor, value: int) -> torch.Tensor:
            return F.pad(t, (0, length - t.shape[1]), value=value)

        ids = torch.cat([pad_to(input_ids, pad), pad_to(pair_input_ids, pad)])
        mask = torch.cat([pad_to(attention_mask, 0), pad_to(pair_attention_mask, 0)])
        targets = torch.cat([pad_to(labels, -100), pad_to(pair_targets, -100)])
        kinds = OBJECTIVES[objective]
        out = self.veco(ids, mask, return_first_attended=True)
        h, first = out.last_hidden_state, out.first_attended  # [H_x; H_y], and layer 1's LN(E + SA(E))
        memory = torch.cat([h[batch:], h[:batch]])  # x reads H_y^L, y reads H_x^L
        memory_mask = torch.cat([mask[batch:], mask[:batch]])
        if detach_memory:
            memory = memory.detach()
        names: list[str] = []
        per_token: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        masked = targets.ne(-100)
        rows, gold = masked.nonzero(as_tuple=True)[0], targets[masked]
        for kind in kinds:
            if kind == "mlm":
                hidden = h[masked]
            else:  # S^0 = H^0: the SA+CA+FFN pass starts from the H-stream's first self-attention output; the
                # last layer runs at the masked positions only (the loss reads nothing else)
                sa = kind == "ca_mlm"
                hidden = self.veco(ids, mask, memory=memory, memory_mask=memory_mask, self_attention=sa,
                                   output_positions=masked, first_attended=first if sa else None).last_hidden_state
            losses, correct = self._masked_terms(hidden, gold)
            per_token.append((losses, correct, rows))
            names += [f"{kind}_x", f"{kind}_y"]
        terms: dict[str, torch.Tensor] = {}
        is_x = rows < batch
        for (losses, _, _), kind in zip(per_token, kinds, strict=True):
            for side, select in (("x", is_x), ("y", ~is_x)):
                chosen = losses[select]
                terms[f"{kind}_{side}"] = chosen.mean() if chosen.numel() else losses.sum() * 0.0
        loss = torch.stack(list(terms.values())).sum()
        stats = None
        if not self.training:
            with torch.no_grad():
                stats = torch.zeros(batch, 3 * len(names), dtype=torch.float32, device=ids.device)
                example = rows.remainder(batch)
                for k, (losses, correct, _) in enumerate(per_token):
                    for s, select in enumerate((is_x, ~is_x)):
                        column = 3 * (2 * k + s)
                        values = torch.stack([losses[select].detach(), torch.ones_like(losses[select]),
                                              correct[select].float()], 1)
                        stats[:, column : column + 3].index_add_(0, example[select], values)
        return VecoPreTrainingOutput(loss=loss, stats=stats, terms=terms if self.training else None)


class VecoForSequenceClassification(VecoPreTrainedModel):
    """Plug-out (the H-stream's first token) or, with config `plug_in`, plug-in: [H_x^L; S_x^L] at the first token,
    S_x reading the paired text's H-stream (`pair_input_ids`)."""

    def __init__(self, config: VecoConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.veco = VecoModel(config)
        self.classifier = VecoClassificationHead(config, (2 if config.plug_in else 1) * config.hidden_size)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pair_input_ids: torch.Tensor | None = None,
        pair_attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        hidden = self.veco(input_ids, attention_mask, position_ids=position_ids,
                           inputs_embeds=inputs_embeds).last_hidden_state
        if self.config.plug_in:
            if pair_input_ids is None:
                raise ConfigError("a plug-in VECO classifier needs the paired text (pair_input_ids): use "
                                  "--task veco_classification with --task.pair_column, or plug_in=false")
            if pair_attention_mask is None:
                pair_attention_mask = pair_input_ids.ne(self.config.pad_token_id).long()
            memory = self.veco(pair_input_ids, pair_attention_mask).last_hidden_state
            s = self.veco(input_ids, attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds,
                          memory=memory, memory_mask=pair_attention_mask).last_hidden_state
            features = torch.cat([hidden[:, 0], s[:, 0]], dim=-1)
        else:
            features = hidden[:, 0]
        logits = self.classifier(features)
        loss = None
        if labels is not None:
            if self.num_labels == 1 or self.config.problem_type == "regression":
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


# ---------------------------------------------------------------------------------------------------------------
# NLG: encoder-decoder
# ---------------------------------------------------------------------------------------------------------------
def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, start_token_id: int) -> torch.Tensor:
    """Decoder inputs from labels: `y </s> [tgt]` -> `[tgt] y </s>` (fairseq's prev_output_tokens)."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = start_token_id
    return shifted.masked_fill(shifted.eq(-100), pad_token_id)


class VecoDecoder(nn.Module):
    """S-stream layers with causal self-attention and cross-attention to the encoder output."""

    def __init__(self, config: VecoConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.config = config
        self.embeddings = VecoEmbeddings(config, word_embeddings)
        self.layers = nn.ModuleList([VecoLayer(config, i, cross_attention=True) for i in range(config.decoder_layers)])

    def forward(self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                cache: EncoderDecoderCache | None = None) -> torch.Tensor:
        past = cache.get_seq_length() if cache is not None else 0
        hidden = self.embeddings(input_ids, past_length=past)
        length = input_ids.shape[1]
        mask = None  # one new token attends to every cached one
        if length > 1:
            mask = torch.ones(length, past + length, dtype=torch.bool, device=input_ids.device).tril(past)[None, None]
        if attention_mask is not None and not bool(attention_mask.all()):
            keys = attention_mask.bool()[:, None, None, -(past + length):]
            mask = keys if mask is None else mask & keys
        memory_mask = key_mask(encoder_attention_mask)
        for layer in self.layers:
            hidden = layer(hidden, mask, encoder_hidden_states, memory_mask, cache=cache)
        return hidden


class VecoSeq2SeqModel(nn.Module):
    def __init__(self, config: VecoConfig) -> None:
        super().__init__()
        self.shared = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.encoder = VecoModel(config, word_embeddings=self.shared, cross_attention=False)
        self.decoder = VecoDecoder(config, self.shared)


class VecoForConditionalGeneration(VecoPreTrainedModel, GenerationMixin):
    """VECO for NLG (Sec. 3.3): encoder = the H-stream stack, decoder = S-stream layers with causal self-attention
    reading the encoder's last layer; embeddings shared by encoder, decoder and output projection (fairseq
    `--share-all-embeddings`). Decoding starts with `decoder_start_token_id` (the target language token) and stops
    at the generation config's eos (the same token), as the official task (see `plmkit.veco.tokenization`)."""

    base_model_prefix = "model"
    _tied_weights_keys = {
        "model.encoder.embeddings.word_embeddings.weight": "model.shared.weight",
        "model.decoder.embeddings.word_embeddings.weight": "model.shared.weight",
        "lm_head.weight": "model.shared.weight",
    }

    def __init__(self, config: VecoConfig) -> None:
        super().__init__(config)
        if not config.is_encoder_decoder:
            raise ConfigError("VecoForConditionalGeneration needs an encoder-decoder config (is_encoder_decoder=true, "
                              "decoder_layers); build one from a pre-trained VECO with "
                              "VecoForConditionalGeneration.from_pretraining or `plmkit veco init-nlg`")
        self.model = VecoSeq2SeqModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.shared = value
        self.model.encoder.embeddings.word_embeddings = value
        self.model.decoder.embeddings.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def get_encoder(self, *args: Any, **kwargs: Any) -> VecoModel:
        return self.model.encoder

    def get_decoder(self) -> VecoDecoder:
        return self.model.decoder

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self._start_id())

    def _start_id(self) -> int:
        start = self.config.decoder_start_token_id
        if start is None:
            raise ConfigError("this VECO NLG model has no decoder_start_token_id (the target language token)")
        return int(start)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        labels: torch.Tensor | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Seq2SeqLMOutput:
        cache = cache if cache is not None else past_key_values
        if labels is not None and decoder_input_ids is None:
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        if encoder_outputs is None:
            encoder_outputs = self.model.encoder(input_ids, attention_mask)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs[0])
        memory = encoder_outputs.last_hidden_state
        if attention_mask is None and input_ids is not None:
            attention_mask = input_ids.ne(self.config.pad_token_id).long()
        if use_cache and cache is None and labels is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        if not use_cache and labels is not None:
            cache = None
        hidden = self.model.decoder(decoder_input_ids, memory, attention_mask, decoder_attention_mask, cache)
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1))
        return Seq2SeqLMOutput(loss=loss, logits=logits, cache=cache, encoder_last_hidden_state=memory)

    # -- initialisation from a pre-trained VECO ---------------------------------------------------------------------
    @classmethod
    def from_pretraining(
        cls,
        pretrained: VecoPreTrainedModel | str,
        keep_decoder_layers: list[int] | None = None,
        decoder_start_token_id: int | None = None,
        **overrides: Any,
    ) -> VecoForConditionalGeneration:
        """An NLG model whose encoder layers are the pre-trained layers' SA/FFN and whose decoder layer j is a copy
        of pre-trained layer `keep_decoder_layers[j]` (SA, CA with its LayerNorm, FFN) -- the official
        `--keep-decoder-layers`; default: the last min(6, L) layers, as the official 24+6 setting keeps 18..23.
        Decoder positions and embedding LayerNorm start as copies of the encoder's; everything is untied."""
        if isinstance(pretrained, str):
            pretrained = AutoModel.from_pretrained(pretrained)
        source = getattr(pretrained, "veco", pretrained)
        if not isinstance(source, VecoModel):
            raise ConfigError(f"expected a VECO model, got {type(pretrained).__name__}")
        if not source.has_cross_attention:
            raise ConfigError("the decoder is initialised from the plug-in cross-attention, but this VECO model has "
                              "no cross-attention weights (cross_attention=false)")
        layers = source.config.num_hidden_layers
        keep = list(keep_decoder_layers) if keep_decoder_layers else list(range(max(0, layers - 6), layers))
        bad = [i for i in keep if not 0 <= i < layers]
        if bad:
            raise ConfigError(f"keep_decoder_layers {bad} are not layers of this {layers}-layer model")
        config = copy.deepcopy(source.config)
        config.update({"is_encoder_decoder": True, "decoder_layers": len(keep), "keep_decoder_layers": keep,
                       "plug_in": False, "decoder_start_token_id": decoder_start_token_id,
                       "architectures": None, **overrides})
        config.check()
        model = cls(config)
        with torch.no_grad():
            model.model.shared.weight.copy_(source.embeddings.word_embeddings.weight)
            for embeddings in (model.model.encoder.embeddings, model.model.decoder.embeddings):
                embeddings.position_embeddings.load_state_dict(source.embeddings.position_embeddings.state_dict())
                embeddings.LayerNorm.load_state_dict(source.embeddings.LayerNorm.state_dict())
            for target, layer in zip(model.model.encoder.layers, source.layers, strict=True):
                state = {k: v for k, v in layer.state_dict().items() if not k.startswith("encoder_attn")}
                target.load_state_dict(state)
            for target, index in zip(model.model.decoder.layers, keep, strict=True):
                target.load_state_dict(source.layers[index].state_dict())
        model.tie_weights()
        return model


def register() -> None:
    """Register the VECO classes with transformers' Auto classes (entry point `plmkit.models: veco`), and the tiny
    alias `tiny-veco` for tests."""
    AutoConfig.register(VecoConfig.model_type, VecoConfig, exist_ok=True)
    AutoModel.register(VecoConfig, VecoModel, exist_ok=True)
    AutoModelForMaskedLM.register(VecoConfig, VecoForPreTraining, exist_ok=True)
    AutoModelForSequenceClassification.register(VecoConfig, VecoForSequenceClassification, exist_ok=True)
    AutoModelForSeq2SeqLM.register(VecoConfig, VecoForConditionalGeneration, exist_ok=True)
    AutoTokenizer.register(VecoConfig, tokenizer_class=VecoTokenizer, exist_ok=True)
    from plmkit.veco.tiny import register_alias

    register_alias()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """theta_s (embeddings, SA, FFN, their LayerNorms, LM head) and theta_c (CA and its LayerNorm) sizes."""
    seen: set[int] = set()
    out = {"theta_s": 0, "theta_c": 0}
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        out["theta_c" if ".encoder_attn" in name else "theta_s"] += p.numel()
    return out
