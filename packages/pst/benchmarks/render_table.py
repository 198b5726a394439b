"""Render the PST README's results section from packages/pst/benchmarks/results/pst_*.json (never typed by hand).

    python packages/pst/benchmarks/render_table.py   # rewrites the block between the pst-results markers
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from readme_block import paired_verdict, render_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "packages" / "pst" / "README.md"
RESULTS = ROOT / "packages" / "pst" / "benchmarks" / "results"
START, END = "<!-- pst-results:start -->", "<!-- pst-results:end -->"


def reproduction_table(data: dict) -> list[str]:
    lines = [
        "| method | sparsity | seeds | test accuracy (mean +- std) | trainable / model | trainable / MvP's |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(data["summary"], key=lambda r: (r["sparsity"] or 0, r["method"])):
        sparsity = "-" if r["sparsity"] is None else f"{r['sparsity']:.0%}"
        lines.append(
            f"| {r['method']} | {sparsity} | {r['n_seeds']} | {100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_std']:.2f} "
            f"| {100 * r['trainable_share_of_model']:.2f}% | {100 * r['trainable_share_of_movement_pruning']:.2f}% |"
        )
    return lines


def verdicts(data: dict) -> list[str]:
    """The paper's claims (PST on par with or better than MaP and MvP), per sparsity, paired by seed."""
    runs = {}
    for r in data["runs"]:
        runs.setdefault((r["method"], r["sparsity"]), {})[r["seed"]] = r["test_accuracy"]
    lines = ["| claim | 50% | 80% | 90% |", "|---|---|---|---|"]
    for other in ("MaP", "MvP", "MvP (HF reference)"):
        cells = []
        for sparsity in (0.5, 0.8, 0.9):
            a, b = runs.get(("PST", sparsity)), runs.get((other, sparsity))
            cells.append(str(paired_verdict(a, b)) if a and b and set(a) & set(b) else "-")
        lines.append(f"| PST - {other} (points) | {' | '.join(cells)} |")
    return lines


def perf_table(perf: dict) -> list[str]:
    return [
        "| measure | PST / dense | target |",
        "|---|---|---|",
        f"| training step, process CPU time (median) | {perf['step_cpu_ratio_pst_over_dense']:.3f}x | <= 1.25x |",
        f"| training step, wall time (median) | {perf['step_wall_ratio_pst_over_dense']:.3f}x | (noisy) |",
        f"| optimizer state bytes | {100 * perf['optimizer_state_ratio_pst_over_dense']:.2f}% | <= 3% |",
        f"| peak RSS growth over 3 steps | {perf['peak_rss_delta_ratio_pst_over_dense']:.3f}x | <= 1x |",
        f"| peak RSS of the process | {perf['peak_rss_ratio_pst_over_dense']:.3f}x | <= 1x |",
    ]


def render() -> str:
    lines: list[str] = []
    repro = RESULTS / "pst_reproduction.json"
    if repro.exists() and "summary" in json.loads(repro.read_text()):
        data = json.loads(repro.read_text())
        lines += [f"Setup: {' '.join(data['setup'].split())}", "", *reproduction_table(data), "",
                  "Verdicts (mean paired difference over seeds +- its standard error; \"supported\" only beyond twice "
                  "the standard error, \"contradicted\" below minus twice):", "", *verdicts(data), "",
                  "![accuracy vs sparsity](benchmarks/results/pst_reproduction.png)", ""]
    perf = RESULTS / "pst_perf.json"
    if perf.exists():
        p = json.loads(perf.read_text())
        lines += [f"Performance ({p['setup']}):", "", *perf_table(p), ""]
    return "\n".join(lines)


def main() -> None:
    render_cli(README, START, END, render)


if __name__ == "__main__":
    main()
