"""fairseq model `veco`: VECO's encoder-decoder for NLG (Luo et al., ACL 2021, Sec. 3.3) as fairseq's
`TransformerModel` with the official NLG settings (AliceMind/VECO `NLG/fairseq/models/veco/model.py`).

The official architecture differs from fairseq's base Transformer in: post-LN layers, learned positions (with
fairseq's padding offset, as XLM-R), a LayerNorm on the embeddings (`layernorm_embedding`), token embeddings
scaled by sqrt(d), GELU, and one embedding matrix for encoder, decoder and output (`share_all_embeddings`).
`--keep-decoder-layers` / `--keep-encoder-layers` pick which layers of a deeper checkpoint (e.g. a pre-trained
VECO loaded with `--restore-file`) become the model's layers, renumbered in the order given. The vocabulary is fitted
as the official loading fits it: a checkpoint with one embedding row more than a dictionary without `<mask>` loses
its last row (pre-training's `<mask>`), and a larger one keeps the rows `--resized-dict-map` marks (the official
release fine-tunes each language pair on a dictionary cut down to it). Both rewrite the state dict in
`upgrade_state_dict_named`, which fairseq runs on every checkpoint it loads.

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
from pathlib import Path
from typing import Any

import torch
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel, base_architecture

__all__ = ["VecoFairseqModel", "keep_layers", "kept_rows"]
SPECIALS = 4  # fairseq's <s> <pad> </s> <unk>, before the symbols of dict.txt


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


def kept_rows(loaded: int, dictionary: int, has_mask: bool, dict_map: list[str] | None) -> list[bool] | None:
    """Which of a checkpoint's `loaded` embedding rows a model whose dictionary has `dictionary` symbols keeps
    (None: all of them), as the official `upgrade_state_dict_named` decides:

    - one row more than the dictionary, which has no `<mask>`: all but the last (pre-training's `<mask>`);
    - more rows than that: the rows the `--resized-dict-map` lines mark with 1, one line per entry of the
      pre-training `dict.txt`; fairseq's four specials before them are kept, and a `<mask>` row after them (the
      official layout: `dict.txt` without `<mask>`) is kept when the dictionary has `<mask>`.
    """
    if loaded <= dictionary + 1:
        return [True] * (loaded - 1) + [False] if loaded == dictionary + 1 and not has_mask else None
    if dict_map is None:
        raise ValueError(f"the checkpoint's embedding has {loaded} rows and the dictionary {dictionary} symbols: pass "
                         "--resized-dict-map (one 0/1 line per entry of the pre-training dict.txt) to say which rows "
                         "this dictionary keeps")
    lines = list(dict_map)
    while lines and not lines[-1].strip():
        lines.pop()
    bad = sorted({line for line in lines if line.strip() not in ("0", "1")})
    if bad:
        raise ValueError(f"--resized-dict-map lines must be 0 or 1; found {bad[:5]}")
    keep = [True] * SPECIALS + [line.strip() == "1" for line in lines]
    if len(keep) == loaded - 1:
        keep.append(has_mask)
    if len(keep) != loaded:
        raise ValueError(f"--resized-dict-map has {len(lines)} lines for a checkpoint with {loaded} embedding rows "
                         f"({SPECIALS} specials, one per dict.txt entry, and possibly <mask>)")
    if sum(keep) != dictionary:
        raise ValueError(f"--resized-dict-map keeps {sum(keep)} rows (specials included) but the dictionary has "
                         f"{dictionary} symbols")
    return keep


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
        parser.add_argument("--resized-dict-map", type=str, metavar="FILE", default=None,
                            help="0/1 per line of the pre-training dict.txt: the embedding rows a smaller dictionary "
                                 "keeps when a larger checkpoint is loaded")

    def upgrade_state_dict_named(self, state_dict: dict[str, Any], name: str) -> None:
        prefix = f"{name}." if name else ""
        for side in ("encoder", "decoder"):
            keep = _layer_list(getattr(self.args, f"keep_{side}_layers", None))
            keep_layers(state_dict, f"{prefix}{side}.layers.", keep, len(getattr(self, side).layers))
        self._fit_vocabulary(state_dict, prefix)
        super().upgrade_state_dict_named(state_dict, name)

    def _fit_vocabulary(self, state_dict: dict[str, Any], prefix: str) -> None:
        """Cut the embedding rows (all copies of the shared matrix) to this model's dictionary (`kept_rows`)."""
        embedding = state_dict.get(f"{prefix}encoder.embed_tokens.weight")
        if embedding is None:
            return
        path = getattr(self.args, "resized_dict_map", None)
        dictionary = self.encoder.dictionary
        lines = Path(path).read_text(encoding="utf-8").split("\n") if path else None
        keep = kept_rows(embedding.size(0), len(dictionary), "<mask>" in dictionary, lines)
        if keep is None:
            return
        rows = torch.tensor(keep)
        for side in ("encoder", "decoder"):
            for name in ("embed_tokens.weight", "output_projection.weight"):
                if f"{prefix}{side}.{name}" in state_dict:
                    state_dict[f"{prefix}{side}.{name}"] = state_dict[f"{prefix}{side}.{name}"][rows]


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
