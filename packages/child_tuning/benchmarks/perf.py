"""Cost of Child-Tuning on all-MiniLM-L6-v2: the F step against the vanilla step, D's Fisher pass against an epoch.

- F: one training step (forward, backward, global clip, AdamW) on the same model and batch (16 x 64 tokens, bf16
  autocast), with and without F's mask (p = 0.3); target <= 1.10x.
- D: the Fisher pass (`fisher_mask`, reference defaults) over N batches against one training epoch over the same N
  batches; target <= 1.3x. Memory: the pass keeps one float32 score per scored parameter, the mask one byte, and
  the threshold allocates a constant number of bytes per scored entry (measured with the torch profiler).
One torch thread, variants interleaved within each round, medians of per-round ratios of process CPU time (and
wall time). Writes packages/child_tuning/benchmarks/results/child_tuning_speed.json.

    python packages/child_tuning/benchmarks/perf.py [--rounds 7] [--steps 6] [--fisher_batches 12]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from plmkit.child_tuning import ChildTuningMethod, fisher_mask, keep_threshold
from plmkit.core.models import load_model

OUT = Path(__file__).parent / "results" / "child_tuning_speed.json"
TARGETS = {"f_step_ratio": 1.10, "fisher_pass_vs_epoch_ratio": 1.3}


def _timed(fn: Callable[[], None]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=6, help="training steps per variant and round")
    parser.add_argument("--fisher_batches", type=int, default=12, help="batches in the epoch / Fisher pass")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, _ = load_model("minilm", num_labels=2)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.fisher_batches):
        ids = torch.randint(1000, 20000, (16, 64), generator=gen)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (16,), generator=gen)})
    child_f = ChildTuningMethod(mode="F", reserve_p=0.3, seed=0)

    def step(batch: dict, method: ChildTuningMethod | None) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if method is not None:
            method.before_optimizer_step(model)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def steps(method: ChildTuningMethod | None) -> Callable[[], None]:
        return lambda: [step(batches[i % len(batches)], method) for i in range(args.steps)]

    def epoch() -> None:
        for batch in batches:
            step(batch, None)

    def fisher() -> None:
        fisher_mask(model, batches, 0.3, grad_clip=1.0, autocast_dtype=torch.bfloat16)

    steps(None)()  # warm-up (allocations, AdamW state)
    steps(child_f)()
    f_ratios, f_wall, d_ratios, d_wall, raw = [], [], [], [], []
    for r in range(args.rounds):
        order = [("vanilla", steps(None)), ("F", steps(child_f))]
        timings = dict((name, _timed(fn)) for name, fn in (order if r % 2 == 0 else order[::-1]))
        f_ratios.append(timings["F"][0] / timings["vanilla"][0])
        f_wall.append(timings["F"][1] / timings["vanilla"][1])
        if r < max(3, args.rounds // 2):
            pair = [("epoch", epoch), ("fisher", fisher)]
            timings.update((name, _timed(fn)) for name, fn in (pair if r % 2 == 0 else pair[::-1]))
            d_ratios.append(timings["fisher"][0] / timings["epoch"][0])
            d_wall.append(timings["fisher"][1] / timings["epoch"][1])
        raw.append({k: {"cpu_s": round(v[0], 3), "wall_s": round(v[1], 3)} for k, v in timings.items()})
        print(f"round {r}: " + ", ".join(f"{k} {v[0]:.2f}s" for k, v in timings.items()), flush=True)

    scored = [p for n, p in model.named_parameters() if "layer" in n]
    n_scored = sum(p.numel() for p in scored)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        keep_threshold([torch.rand_like(p) for p in scored], 0.3)
    threshold_bytes = sum(e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0)
    result = {
        "what": __doc__.splitlines()[0],
        "model": "all-MiniLM-L6-v2 (22.7M parameters), batch 16 x 64 tokens, bf16 autocast, AdamW, 1 thread",
        "f_step_ratio_cpu_median": round(statistics.median(f_ratios), 4),
        "f_step_ratio_wall_median": round(statistics.median(f_wall), 4),
        "fisher_pass_vs_epoch_ratio_cpu_median": round(statistics.median(d_ratios), 4),
        "fisher_pass_vs_epoch_ratio_wall_median": round(statistics.median(d_wall), 4),
        "targets": TARGETS,
        "fisher_memory": {
            "scored_parameters": n_scored,
            "scores_bytes": 4 * n_scored,
            "mask_bytes": n_scored,
            "threshold_allocated_bytes": threshold_bytes,
            "threshold_bytes_per_scored_entry": round(threshold_bytes / n_scored, 2),
        },
        "rounds": args.rounds, "steps_per_round": args.steps, "fisher_batches": args.fisher_batches,
        "torch": torch.__version__, "machine": platform.machine(), "raw": raw,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, indent=2))


if __name__ == "__main__":
    main()
