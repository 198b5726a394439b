"""VECO step cost: one CA-MLM step (Eq. 3: H-stream and S-stream for x and y, four passes) against one MLM step of
the same encoder (the H-stream of x alone, through the core `masked_lm` task's loss), side by side. Both score the
vocabulary at the masked positions only.

Model: the reproduction's small VECO (4 layers, d=256, 4 heads, FFN 1024, vocabulary 16,000), fp32, one torch
thread. A batch is 32 pairs of 64 random tokens with 15% of each side masked. One step = forward + backward + AdamW
step + zero_grad. The two steps are interleaved, each repeated; the ratio of the median process CPU seconds (and of
wall seconds, noisier on a shared machine) is reported. Target (it is four passes, two of them with the extra
cross-attention sub-layer): <= 4.4x.

    PLMKIT_NUM_THREADS=1 python packages/veco/benchmarks/perf.py   ->  packages/veco/benchmarks/results/veco_perf.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results" / "veco_perf.json"
SHAPE = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024, vocab_size=16000)
TARGET = 4.4


def build(batch: int, length: int):
    from plmkit.veco.configuration import VecoConfig
    from plmkit.veco.modeling import VecoForPreTraining

    torch.manual_seed(0)
    model = VecoForPreTraining(VecoConfig(**SHAPE)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def side() -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(5, SHAPE["vocab_size"], (batch, length))
        chosen = torch.rand(batch, length) < 0.15
        return ids.masked_fill(chosen, 4), torch.where(chosen, ids, torch.full_like(ids, -100))

    (x, lx), (y, ly) = side(), side()
    mask = torch.ones_like(x)
    return model, optimizer, dict(input_ids=x, attention_mask=mask, labels=lx, pair_input_ids=y,
                                  pair_attention_mask=mask, pair_targets=ly)


def mlm_step(model, optimizer, batch) -> None:
    """The core `masked_lm` task's step: the LM head scores the masked positions only, as CA-MLM's terms do."""
    from plmkit.core.tasks.masked_lm import masked_lm_forward

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    logits, targets, _ = masked_lm_forward(model, inputs)
    torch.nn.functional.cross_entropy(logits.float(), targets).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def ca_mlm_step(model, optimizer, batch) -> None:
    model(**batch, objective="veco").loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(fn, *args) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn(*args)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("PLMKIT_NUM_THREADS", "1")))
    model, optimizer, batch = build(args.batch, args.length)
    for fn in (mlm_step, ca_mlm_step):  # warm-up (allocations, AdamW state)
        fn(model, optimizer, batch)
    times: dict[str, list[tuple[float, float]]] = {"mlm": [], "ca_mlm": []}
    for _ in range(args.repeats):
        times["mlm"].append(timed(mlm_step, model, optimizer, batch))
        times["ca_mlm"].append(timed(ca_mlm_step, model, optimizer, batch))
    median = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for k, v in times.items()}
    result = {
        "setup": f"VECO {SHAPE['num_hidden_layers']} layers, d={SHAPE['hidden_size']}, vocabulary "
                 f"{SHAPE['vocab_size']}; {args.batch} pairs x {args.length} tokens; fp32, "
                 f"{torch.get_num_threads()} thread(s); median of {args.repeats} interleaved steps",
        "mlm_step_cpu_s": median["mlm"][0], "ca_mlm_step_cpu_s": median["ca_mlm"][0],
        "mlm_step_wall_s": median["mlm"][1], "ca_mlm_step_wall_s": median["ca_mlm"][1],
        "ratio_cpu": median["ca_mlm"][0] / median["mlm"][0], "ratio_wall": median["ca_mlm"][1] / median["mlm"][1],
        "target_ratio": TARGET, "load_average": os.getloadavg()[0],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
