"""fairseq model `veco`: VECO's encoder-decoder for NLG (Luo et al., ACL 2021, Sec. 3.3) as fairseq's
`TransformerModel` with the official NLG settings (AliceMind/VECO `NLG/fairseq/models/veco/model.py`).

The official architecture differs from fairseq's base Transformer in: post-LN layers, learned positions (with
fairseq's padding offset, as XLM-R), a LayerNorm on the embeddings (`layernorm_embedding`), token embeddings
scaled by sqrt(d), GELU, and one embedding matrix for encoder, decoder and output (`share_all_embeddings`).
`--keep-decoder-layers` / `--keep-encoder-layers` pick which layers of a deeper checkpoint (e.g. a pre-trained
VECO loaded with `--restore-file`) become the model's layers, renumbered in the order given; the state dict is
rewritten in `upgrade_state_dict_named`, which fairseq runs on every checkpoint it loads.

Architectures (sizes of the paper's Sec. 4; every default can be overridden on the command line):

| arch | layers (enc+dec) | d | FFN | heads |
|---|---|---|---|---|
| `veco_small` | 6+6 | 768 | 3072 | 12 |
| `veco_base` | 12+6 | 768 | 3072 | 12 |
| `veco_large` | 24+6 | 1024 | 4096 | 16 |
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import torch
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel, base_architecture

__all__ = ["VecoFairseqModel", "keep_layers"]


def _layer_list(value: str | None) -> list[int] | None:
    return [int(i) for i in value.split(",") if i.strip()] if value else None


def keep_layers(state_dict: dict[str, torch.Tensor], prefix: str, keep: list[int] | None, wanted: int) -> None:
    """Keep layers `keep` of `prefix` ("decoder.layers.") in `state_dict`, renumbered 0..len(keep)-1, and drop the
    others (in place). Without `keep`, a state dict deeper than `wanted` layers keeps its last `wanted` layers, as
    `VecoForConditionalGeneration.from_pretraining` does; one with `wanted` layers is left as it is."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.(.*)")
    found = sorted({int(m.group(1)) for k in state_dict if (m := pattern.fullmatch(k))})
    if keep is None:
        if len(found) <= wanted:
            return
        keep = found[-wanted:]
    if len(keep) != wanted:
        raise ValueError(f"--keep-{prefix.split('.')[0]}-layers names {len(keep)} layers for a model with {wanted}")
    missing = sorted(set(keep) - set(found))
    if missing:
        raise ValueError(f"--keep-{prefix.split('.')[0]}-layers: layers {missing} are not in the checkpoint "
                         f"(it has {len(found)})")
    renumber = {old: new for new, old in enumerate(keep)}
    for key in [k for k in state_dict if pattern.fullmatch(k)]:
        m = pattern.fullmatch(key)
        assert m is not None
        value = state_dict.pop(key)
        old = int(m.group(1))
        if old in renumber:
            state_dict[f"{prefix}{renumber[old]}.{m.group(2)}"] = value


@register_model("veco")
class VecoFairseqModel(TransformerModel):
    """fairseq's Transformer with VECO's settings (module docstring) and layer selection on load."""

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        TransformerModel.add_args(parser)
        parser.add_argument("--keep-encoder-layers", type=str, metavar="I,J,...", default=None,
                            help="checkpoint encoder layers that become this model's (default: all, or the last N)")
        parser.add_argument("--keep-decoder-layers", type=str, metavar="I,J,...", default=None,
                            help="checkpoint decoder layers that become this model's (default: all, or the last N; "
                                 "the official 24+6 setting keeps 18..23)")

    def upgrade_state_dict_named(self, state_dict: dict[str, Any], name: str) -> None:
        prefix = f"{name}." if name else ""
        for side in ("encoder", "decoder"):
            keep = _layer_list(getattr(self.args, f"keep_{side}_layers", None))
            keep_layers(state_dict, f"{prefix}{side}.layers.", keep, len(getattr(self, side).layers))
        super().upgrade_state_dict_named(state_dict, name)


def _veco_defaults(args: argparse.Namespace, layers: int, dim: int, ffn: int, heads: int) -> None:
    """VECO's settings, then fairseq's base defaults for everything else (a value given on the command line wins)."""
    defaults: dict[str, Any] = dict(
        encoder_embed_dim=dim, encoder_ffn_embed_dim=ffn, encoder_layers=layers, encoder_attention_heads=heads,
        decoder_embed_dim=dim, decoder_ffn_embed_dim=ffn, decoder_layers=6, decoder_attention_heads=heads,
        encoder_normalize_before=False, decoder_normalize_before=False,
        encoder_learned_pos=True, decoder_learned_pos=True, layernorm_embedding=True, no_scale_embedding=False,
        activation_fn="gelu", dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
        share_all_embeddings=True, share_decoder_input_output_embed=True,
        max_source_positions=512, max_target_positions=512,
    )
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    base_architecture(args)


@register_model_architecture("veco", "veco_small")
def veco_small(args: argparse.Namespace) -> None:
    _veco_defaults(args, layers=6, dim=768, ffn=3072, heads=12)


@register_model_architecture("veco", "veco_base")
def veco_base(args: argparse.Namespace) -> None:
    _veco_defaults(args, layers=12, dim=768, ffn=3072, heads=12)


@register_model_architecture("veco", "veco_large")
def veco_large(args: argparse.Namespace) -> None:
    _veco_defaults(args, layers=24, dim=1024, ffn=4096, heads=16)
