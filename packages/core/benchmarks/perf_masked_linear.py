"""Cost of a movement-pruning MaskedLinear (top-k, 90% sparsity) against nn.Linear, forward + backward.

MiniLM-like shapes: 32 sequences x 64 tokens through the FFN matrices 384 -> 1536 and 1536 -> 384. One torch
thread, the two variants interleaved within each round, several rounds, medians of per-round ratios of process
CPU time (stable on a shared machine) and wall time. Writes
packages/core/benchmarks/results/masked_linear.json.

    python packages/core/benchmarks/perf_masked_linear.py [--rounds 9] [--reps 3]
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
from torch import nn

from plmkit.core.sparsity import MaskedLinear

TARGET = 1.30
SPARSITY = 0.9
TOKENS = 32 * 64
SHAPES = [(384, 1536), (1536, 384)]


def _step(layer: nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> Callable[[], None]:
    """One training step's worth of work for the layer: forward, backward to weights, scores and input."""

    def run() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(upstream)

    return run


def _time(fn: Callable[[], None], reps: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.process_time() - cpu) / reps, (time.perf_counter() - wall) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "masked_linear.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    variants = {}
    for fan_in, fan_out in SHAPES:
        dense = nn.Linear(fan_in, fan_out)
        masked = MaskedLinear.from_linear(nn.Linear(fan_in, fan_out), scorer="movement", sparsity=SPARSITY)
        with torch.no_grad():
            masked.scores.normal_()  # distinct scores, as after some training
        x = torch.randn(TOKENS, fan_in, requires_grad=True)
        upstream = torch.randn(TOKENS, fan_out)
        variants[f"{fan_in}->{fan_out}"] = {
            "linear": _step(dense, x, upstream),
            "masked": _step(masked, x, upstream),
        }
    for pair in variants.values():  # warm-up
        pair["linear"](), pair["masked"]()

    rounds = []
    for _ in range(args.rounds):
        record = {}
        for shape, pair in variants.items():
            for name in ("linear", "masked"):
                cpu, wall = _time(pair[name], args.reps)
                record[f"{shape} {name}"] = {"cpu_s": cpu, "wall_s": wall}
        rounds.append(record)

    def median_ratio(shapes: list[str], clock: str) -> float:
        return statistics.median(
            sum(r[f"{s} masked"][clock] for s in shapes) / sum(r[f"{s} linear"][clock] for s in shapes)
            for r in rounds
        )

    shapes = list(variants)
    ratios = {
        "both": {"cpu": median_ratio(shapes, "cpu_s"), "wall": median_ratio(shapes, "wall_s")},
        **{s: {"cpu": median_ratio([s], "cpu_s"), "wall": median_ratio([s], "wall_s")} for s in shapes},
    }
    medians = {
        key: {clock: statistics.median(r[key][clock] for r in rounds) for clock in ("cpu_s", "wall_s")}
        for key in rounds[0]
    }
    result = {
        "what": "MaskedLinear(movement, top-k, sparsity 0.9) vs nn.Linear, forward+backward, fp32 CPU",
        "tokens": TOKENS,
        "shapes": [list(s) for s in SHAPES],
        "sparsity": SPARSITY,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "reps_per_round": args.reps,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "per_round": rounds,
        "median_seconds": medians,
        "median_ratio": ratios,
        "target_ratio": TARGET,
        "target_met": ratios["both"]["cpu"] <= TARGET,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in ratios.items():
        print(f"{key:>12}: masked/linear CPU {value['cpu']:.3f}, wall {value['wall']:.3f}")
    print(f"target <= {TARGET}: {'met' if result['target_met'] else 'MISSED'} -> {args.out}")


if __name__ == "__main__":
    main()
