"""Render the results section of README.md from packages/core/benchmarks/results/*.json (never typed by hand).

    .venv/bin/python tools/render_readme.py          # rewrite the block between the markers
    .venv/bin/python tools/render_readme.py --check  # exit 1 if README.md is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tools" / "bench"))
from readme_block import replace_block  # noqa: E402

RESULTS = ROOT / "packages" / "core" / "benchmarks" / "results"
BEGIN, END = "<!-- results:begin (tools/render_readme.py) -->", "<!-- results:end -->"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def render() -> str:
    rows = ["| what | measured | target | file |", "|---|---|---|---|"]
    demo = _load("demo_rt_polarity")
    if demo:
        rows.append(
            f"| `make demo`: MiniLM on rt-polarity, test accuracy | {demo['test_accuracy']:.4f} "
            f"({demo['train_seconds_wall'] / 60:.1f} min, {demo['threads']} thread(s), load average "
            f"{demo['load_average_at_end']:.1f}) | >= 0.78, < 15 min "
            f"| packages/core/benchmarks/results/demo_rt_polarity.json |"
        )
    step = _load("trainer_step")
    if step:
        rows.append(
            f"| core Trainer step / plain PyTorch step | {step['ratio_cpu']:.3f}x CPU, {step['ratio_wall']:.3f}x wall "
            f"| <= {step['target']:.2f}x | packages/core/benchmarks/results/trainer_step.json |"
        )
    masked = _load("masked_linear")
    if masked:
        rows.append(
            f"| MaskedLinear (90% sparsity) / nn.Linear, fwd+bwd | {masked['median_ratio']['both']['cpu']:.3f}x CPU, "
            f"{masked['median_ratio']['both']['wall']:.3f}x wall | <= {masked['target_ratio']:.2f}x "
            f"| packages/core/benchmarks/results/masked_linear.json |"
        )
    return "\n".join(rows)


def main() -> int:
    stale = replace_block(ROOT / "README.md", BEGIN, END, render(), check="--check" in sys.argv)
    return int(stale and "--check" in sys.argv)


if __name__ == "__main__":
    sys.exit(main())
