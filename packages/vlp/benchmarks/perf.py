"""SemVLP performance, ratios side by side in one process (1 torch thread, random weights: costs do not depend on
their values):

- image encoding: SemVLP's image path (the timm encoder's `forward_features` grid, the projection, 2-D positions and
  LayerNorm: `image_features` + `embeddings.image`) vs a plain timm forward of the same backbone (`num_classes=0`,
  i.e. with its global pooling), no grad, batch 64 at 64 px, for a resnet-style (resnet18) and a ViT-style
  (vit_tiny_patch16_224 at 64 px) encoder; target <= 1.1x;
- a pre-training step (forward with the MLM, masked visual regression and codebook and ITM terms, backward, AdamW
  step) in two-stream mode vs single-stream mode: a MiniLM-shaped random trunk (6 layers, hidden 384, cross-modal
  attention in the top 2), with each encoder at 64 px (resnet18: a 2 x 2 grid, 4 image tokens; the ViT: 16 patch
  tokens), batch 32 x 24 caption tokens.

Interleaved, repeated, median of process CPU time (and wall time). Writes
packages/vlp/benchmarks/results/vlp_perf.json.

    python packages/vlp/benchmarks/perf.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from plmkit.vlp import SemVLPConfig, SemVLPForPreTraining
from plmkit.vlp.images import create_backbone

OUT = Path(__file__).parent / "results" / "vlp_perf.json"
IMAGE_SIZE, ENCODE_BATCH, STEP_BATCH, CAPTION = 64, 64, 32, 24
ENCODERS = {"resnet18": {}, "vit_tiny_patch16_224": {}}


def timed(fn, cpu: list[float], wall: list[float], keep: bool) -> None:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    if keep:
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)


def image_encoding(repeats: int) -> dict:
    out = {}
    for name, args in ENCODERS.items():
        torch.manual_seed(0)
        model = SemVLPForPreTraining(SemVLPConfig(timm_model_name=name, timm_model_args=args, image_size=IMAGE_SIZE,
                                                  num_hidden_layers=1, cross_attention_layers=1)).eval()
        plain = create_backbone(name, args, IMAGE_SIZE).eval()
        plain.load_state_dict(model.semvlp.image_encoder.backbone.state_dict())
        pixels = torch.randn(ENCODE_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)
        core = model.semvlp
        variants = {"semvlp": lambda c=core, x=pixels: c.embeddings.image(c.image_features(x)),
                    "timm": lambda b=plain, x=pixels: b(x)}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        wall: dict[str, list[float]] = {k: [] for k in variants}
        with torch.no_grad():
            for repeat in range(repeats + 1):  # the first round warms up
                for key, fn in variants.items():
                    timed(fn, cpu[key], wall[key], repeat > 0)
            tokens = core.embeddings.image(core.image_features(pixels)).shape[1]
        out[name] = {"image_tokens": tokens,
                     "cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
                     "wall_s": {k: statistics.median(v) for k, v in wall.items()},
                     "cpu_ratio_semvlp_over_timm": statistics.median(cpu["semvlp"]) / statistics.median(cpu["timm"]),
                     "wall_ratio_semvlp_over_timm": statistics.median(wall["semvlp"]) / statistics.median(wall["timm"])}
    return out


def step_modes(repeats: int, encoder: str) -> dict:
    torch.manual_seed(0)
    config = SemVLPConfig(timm_model_name=encoder, image_size=IMAGE_SIZE, cross_attention_layers=2)
    model = SemVLPForPreTraining(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(1)
    tokens = model.semvlp.image_features(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)).shape[1:3].numel()

    def batch() -> dict:
        mlm = torch.full((STEP_BATCH, CAPTION), -100)
        chosen = torch.rand(STEP_BATCH, CAPTION, generator=gen) < 0.15
        mlm[chosen] = torch.randint(1000, 20000, (int(chosen.sum()),), generator=gen)
        return {"input_ids": torch.randint(1000, 20000, (STEP_BATCH, CAPTION), generator=gen),
                "attention_mask": torch.ones(STEP_BATCH, CAPTION, dtype=torch.long),
                "pixel_values": torch.randn(STEP_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen),
                "itm_labels": torch.randint(0, 2, (STEP_BATCH,), generator=gen), "mlm_targets": mlm,
                "visual_mask": torch.rand(STEP_BATCH, tokens, generator=gen) < 0.15,
                "visual_targets": torch.randn(STEP_BATCH, tokens, config.visual_feature_dim, generator=gen),
                "visual_codes": torch.randint(0, config.codebook_size, (STEP_BATCH, tokens), generator=gen)}

    def step(inputs: dict, mode: str) -> None:
        model(**inputs, mode=mode).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    cpu: dict[str, list[float]] = {"single": [], "two": []}
    wall: dict[str, list[float]] = {"single": [], "two": []}
    for repeat in range(repeats + 1):
        inputs = batch()
        for mode in ("single", "two"):
            timed(lambda m=mode, b=inputs: step(b, m), cpu[mode], wall[mode], repeat > 0)
    return {"image_tokens": tokens, "cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
            "wall_s": {k: statistics.median(v) for k, v in wall.items()},
            "cpu_ratio_two_over_single": statistics.median(cpu["two"]) / statistics.median(cpu["single"]),
            "wall_ratio_two_over_single": statistics.median(wall["two"]) / statistics.median(wall["single"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {
        "setup": f"1 thread, {args.repeats} interleaved repeats (median); image encoding: batch {ENCODE_BATCH} at "
                 f"{IMAGE_SIZE} px, no grad; step: MiniLM-shaped random trunk (6 layers, hidden 384, cross-attention "
                 f"in the top 2), each encoder at {IMAGE_SIZE} px, batch {STEP_BATCH} x {CAPTION} tokens, MLM + visual "
                 f"regression + codebook + ITM, AdamW",
        "image_encoding": image_encoding(args.repeats),
        "step": {name: step_modes(args.repeats, name) for name in ENCODERS},
        "targets": {"image_encoding_ratio": 1.1},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
