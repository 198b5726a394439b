"""Render the CAP README's results section from packages/cap/benchmarks/results/cap_*.json (never typed by hand).

    python packages/cap/benchmarks/render_table.py   # rewrites the block between the cap-results markers
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from readme_block import paired_verdict, render_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "packages" / "cap" / "README.md"
RESULTS = ROOT / "packages" / "cap" / "benchmarks" / "results"
START, END = "<!-- cap-results:start -->", "<!-- cap-results:end -->"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def reproduction_table(data: dict) -> list[str]:
    teachers = list(data.get("teachers", {}).values())
    lines = [f"Teacher (dense fine-tuning) test accuracy: {', '.join(f'{100 * t:.2f}' for t in teachers)}.", "",
             "| family | target | method | seeds | test accuracy (mean +- std) | measured sparsity | CPU speed-up (compacted) |",
             "|---|---|---|---|---|---|---|"]
    for r in data["summary"]:
        if r["family"] == "unstructured":
            measured = _pct(r.get("measured_sparsity"))
        else:
            measured = f"heads {_pct(r.get('pruned_heads'))}, neurons {_pct(r.get('pruned_neurons'))}"
        speedup = f"{r['cpu_speedup']:.2f}x" if "cpu_speedup" in r else "-"
        target = "lambda 190" if r["method"] == "CAP-soft (lambda 190)" else _pct(r["target"])
        lines.append(f"| {r['family']} | {target} | {r['method']} | {r['n_seeds']} | "
                     f"{100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_std']:.2f} | {measured} | {speedup} |")
    return lines


# (claim, method, baseline): the paper's claim is that the contrastive terms add to pruning + distillation.
CLAIMS = [
    ("CAP-m - MvP+KD", "CAP-m", "MvP+KD"),
    ("CAP-m - MvP+KD, HF-reference scores", "CAP-m (HF-reference scores)", "MvP+KD (HF-reference scores)"),
    ("CAP-soft - MvP+KD", "CAP-soft", "MvP+KD"),
    ("CAP-f - FO+KD", "CAP-f", "FO+KD"),
    ("CAP-f, mean representation - CAP-f ([CLS])", "CAP-f, mean representation", "CAP-f"),
]


def verdicts(data: dict) -> list[str]:
    """Each claim per target sparsity, paired by seed (teachers are per seed)."""
    runs: dict[tuple[str, float], dict[int, float]] = {}
    for r in data["runs"]:
        runs.setdefault((r["method"], r["target"]), {})[r["seed"]] = r["test_accuracy"]
    lines = ["| comparison | target | difference (points) |", "|---|---|---|"]
    for claim, a_name, b_name in CLAIMS:
        for target in sorted({t for (m, t) in runs if m == a_name}):
            a, b = runs.get((a_name, target)), runs.get((b_name, target))
            if a and b and set(a) & set(b):
                lines.append(f"| {claim} | {_pct(target)} | {paired_verdict(a, b)} |")
    return lines


def perf_table(perf: dict) -> list[str]:
    return [
        f"Setup: {perf['setup']}.", "",
        "| measure | ratio | target |",
        "|---|---|---|",
        f"| CAP-m step / movement-pruning + KD step, process CPU time (median) | "
        f"{perf['step_cpu_ratio_cap_m_over_movement_kd']:.3f}x | <= {perf['targets']['step_ratio']}x |",
        f"| same, wall time (median, noisy) | {perf['step_wall_ratio_cap_m_over_movement_kd']:.3f}x | - |",
        f"| bank bytes per stored representation / fp32 | {perf['bank_ratio_vs_fp32']:.3f}x | "
        f"<= {perf['targets']['bank_ratio']}x |",
    ]


def render() -> str:
    lines: list[str] = []
    repro = RESULTS / "cap_reproduction.json"
    if repro.exists() and json.loads(repro.read_text()).get("summary"):
        data = json.loads(repro.read_text())
        lines += [f"Setup: {data['setup']}", "", *reproduction_table(data), "",
                  "Verdicts (mean paired difference over seeds +- its standard error; \"supported\" only beyond twice "
                  "the standard error, \"contradicted\" below minus twice):", "", *verdicts(data), "",
                  "![accuracy vs sparsity](benchmarks/results/cap_reproduction.png)", ""]
    perf = RESULTS / "cap_perf.json"
    if perf.exists():
        lines += ["Performance:", "", *perf_table(json.loads(perf.read_text())), ""]
    return "\n".join(lines) or "No results yet: run packages/cap/benchmarks/reproduce.py and packages/cap/benchmarks/perf.py."


def main() -> None:
    render_cli(README, START, END, render)


if __name__ == "__main__":
    main()
