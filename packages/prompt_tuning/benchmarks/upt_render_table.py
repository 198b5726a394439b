"""Render packages/prompt_tuning/benchmarks/results/upt_reproduction.json into the UPT section of
packages/prompt_tuning/README.md, and plot it (packages/prompt_tuning/benchmarks/results/upt_reproduction.png).
The table is generated, never typed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from readme_block import mean_std, paired_verdict, render_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "packages" / "prompt_tuning" / "benchmarks" / "results" / "upt_reproduction.json"
PLOT = ROOT / "packages" / "prompt_tuning" / "benchmarks" / "results" / "upt_reproduction.png"
README = ROOT / "packages" / "prompt_tuning" / "README.md"
START, END = "<!-- upt-results:start -->", "<!-- upt-results:end -->"
NAMES = {
    "finetune": "fine-tuning ([CLS] head)",
    "upt_single": "UPT-Single (POV, no sources)",
    "upt": "UPT (stage 1 on other groups + KSMLM)",
    "upt_no_ksmlm": "UPT w/o KSMLM",
    "upt_single_fresh_head": "UPT-Single, fresh MLM head (no adaptation)",
}


def _cells(runs: list[dict], targets: list[str]) -> dict[tuple[str, str], list[float]]:
    cells: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        if r["target"] in targets:
            cells.setdefault((r["method"], r["target"]), []).append(100 * r["test_accuracy"])
    return cells

# (A, B, label of "A - B"): the papers' claims, then this README's head-adaptation comparison
CLAIMS = [
    ("upt", "upt_single", "UPT - UPT-Single (the paper's claim)"),
    ("upt", "finetune", "UPT - fine-tuning (the paper's claim)"),
    ("upt", "upt_no_ksmlm", "UPT - UPT w/o KSMLM (the paper's claim: KSMLM helps)"),
    ("upt_single", "upt_single_fresh_head", "UPT-Single, adapted MLM head - fresh MLM head (this README)"),
]


def verdict_table(runs: list[dict], targets: list[str]) -> list[str]:
    """Each claim judged per target by `paired_verdict` over runs paired by seed (the seed is also the K-shot sampling
    seed, so paired runs saw the same training examples)."""
    by_seed: dict[tuple[str, str], dict[int, float]] = {}
    for r in runs:
        by_seed.setdefault((r["method"], r["target"]), {})[r["seed"]] = r["test_accuracy"]
    lines = ["Verdicts (A - B in test accuracy points, runs paired by seed, which is also the K-shot sampling seed: mean "
             "difference +- its standard error; **supported** only where the mean exceeds twice its standard error, "
             "**contradicted** below minus twice, otherwise within noise; one seed gives no verdict):", "",
             "| claim (A - B) | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    for a, b, label in CLAIMS:
        cells = [str(paired_verdict(by_seed[(a, t)], by_seed[(b, t)]))
                 if (a, t) in by_seed and (b, t) in by_seed else "-" for t in targets]
        if any(c != "-" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def render(results: dict) -> str:
    s = results["setup"]
    targets = [t for t in s["targets"] if any(r["target"] == t for r in results["runs"])]
    cells = _cells(results["runs"], targets)
    lines = [
        f"Setup: {s['model']}, K = {s['k']} per class (LM-BFF sampler), seeds {s['seeds']}; stage 2: {s['stage2_steps']} "
        f"steps of batch {s['batch']}, learning rate {s['learning_rate']}, max_length {s['max_length']}, bf16, at most "
        f"{s['max_test']} test examples, last step evaluated; stage 1: {s['stage1_steps']} steps, at most "
        f"{s['stage1_train_per_source']} training examples per source. Test accuracy in %, mean +- std over seeds "
        "(n = runs finished).",
        "",
        "| method | " + " | ".join(targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for method, name in NAMES.items():
        row = []
        for t in targets:
            v = cells.get((method, t))
            mean, std = mean_std(v) if v else (0.0, 0.0)
            row.append(f"{mean:.1f} +- {std:.1f} (n={len(v)})" if v else "-")
        if any(c != "-" for c in row):
            lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines += ["", *verdict_table(results["runs"], targets)]
    head = results.get("head_adaptation")
    if head:
        lines += ["", f"Masked-LM head adaptation ({head['steps']} steps, encoder frozen): masked-token top-1 accuracy on "
                      f"held-out builtin text {100 * head['masked_token_accuracy_before']:.1f}% (fresh transform) -> "
                      f"{100 * head['masked_token_accuracy_after']:.1f}%; loss {head['first_loss']:.2f} -> {head['last_loss']:.2f}."]
    if results.get("stage1"):
        lines += ["", "Stage 1 (multi-task validation accuracy over the sources' label words): " + ", ".join(
            f"{k} {100 * v['eval_accuracy']:.1f}%" for k, v in results["stage1"].items())]
    lines += ["", f"Total training + evaluation wall time: {results.get('wall_minutes', 0):.0f} min (shared 2-core machine, 1 thread).",
              "", "![UPT reproduction](benchmarks/results/upt_reproduction.png)"]
    return "\n".join(lines)


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = [t for t in results["setup"]["targets"] if any(r["target"] == t for r in results["runs"])]
    cells = _cells(results["runs"], targets)
    methods = [m for m in NAMES if any((m, t) in cells for t in targets)]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        means, stds = zip(*(mean_std(cells[(m, t)]) if (m, t) in cells else (np.nan, np.nan) for t in targets), strict=True)
        ax.bar(np.arange(len(targets)) + i * width, means, width, yerr=stds, label=NAMES[m], capsize=3)
    ax.set_xticks(np.arange(len(targets)) + width * (len(methods) - 1) / 2, targets)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("UPT on builtin data (minilm, K=16)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)


def main() -> None:
    results = json.loads(RESULTS.read_text())
    render_cli(README, START, END, lambda: f"{render(results)}\n", lambda: plot(results))


if __name__ == "__main__":
    main()
