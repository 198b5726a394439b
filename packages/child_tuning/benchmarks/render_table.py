"""Render the Child-Tuning README's results tables from packages/child_tuning/benchmarks/results/child_tuning_*.json.

Replaces the text between `<!-- results:start -->` and `<!-- results:end -->` in packages/child_tuning/README.md
(tables are generated, never typed).

    python packages/child_tuning/benchmarks/render_table.py [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from readme_block import paired_verdict, render_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "packages" / "child_tuning" / "benchmarks" / "results"
README = ROOT / "packages" / "child_tuning" / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def reproduction_table(data: dict) -> str:
    rows = data["summary"]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    lines = [
        "| method | " + " | ".join(f"{t} test acc. | {t} val acc. | seeds" for t in tasks) + " |",
        "|---|" + "---:|---:|---:|" * len(tasks),
    ]
    if not rows:
        lines = ["(no final-stage run has finished yet)"]
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = []
        for task in tasks:
            r = next((r for r in rows if r["task"] == task and r["method"] == method), None)
            if r is None:
                cells += ["-", "-", "0"]
                continue
            p = f" (p={r['reserve_p']})" if r["reserve_p"] is not None else ""
            cells += [f"{r['test_mean']:.2f} ± {r['test_std']:.2f}{p}", f"{r['val_mean']:.2f} ± {r['val_std']:.2f}",
                      str(r["seeds"])]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    selection = [r for r in data["runs"] if r["stage"] == "selection"]
    grid = "; ".join(
        f"{r['task']} {r['method']} p={r['reserve_p']}: {100 * r['val_accuracy']:.2f}" for r in selection
    )
    status = "complete" if data["complete"] else "INCOMPLETE (stopped for time; rerun the script to finish, it resumes)"
    return (
        "\n".join(lines)
        + f"\n\nAccuracy in %, mean ± std over the seeds listed (of {', '.join(map(str, data['setup']['seeds']))}), "
        + f"full test and validation splits. Status: {status}. Validation accuracy of the `reserve_p` selection runs "
        + f"(seed {data['setup']['selection_seed']}): {grid}. Training wall time of all runs (shared, loaded machine): "
        + f"{data['train_wall_seconds'] / 60:.0f} min."
    )


def verdict_table(data: dict) -> str:
    """The paper's claim (each Child-Tuning mode beats vanilla fine-tuning) per task, judged by `paired_verdict` over
    the final-stage runs paired by seed (every run of a task trains on the same 1,000-example subset)."""
    by_seed: dict[tuple[str, str], dict[int, float]] = {}
    for r in data["runs"]:
        if r["stage"] == "final":
            by_seed.setdefault((r["task"], r["method"]), {})[r["seed"]] = r["test_accuracy"]
    tasks = list(dict.fromkeys(t for t, _ in by_seed))
    modes = [m for m in dict.fromkeys(m for _, m in by_seed) if m != "vanilla"]
    if not tasks or not modes:
        return ""
    lines = ["Verdicts (test accuracy points, runs paired by seed: mean difference +- its standard error; **supported** "
             "only where the mean exceeds twice its standard error, **contradicted** below minus twice, otherwise "
             "within noise):", "",
             "| claim (A - B) | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for mode in modes:
        cells = [str(paired_verdict(by_seed[(t, mode)], by_seed[(t, "vanilla")]))
                 if (t, mode) in by_seed and (t, "vanilla") in by_seed else "-" for t in tasks]
        lines.append(f"| {mode} - vanilla | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speed_table(data: dict) -> str:
    mem = data["fisher_memory"]
    return "\n".join([
        "| measurement | CPU-time ratio (median) | wall-time ratio (median) | target |",
        "|---|---:|---:|---:|",
        f"| Child-Tuning_F step / vanilla step | {data['f_step_ratio_cpu_median']:.3f} | "
        f"{data['f_step_ratio_wall_median']:.3f} | <= {data['targets']['f_step_ratio']} |",
        f"| Fisher pass / one training epoch (same {data['fisher_batches']} batches) | "
        f"{data['fisher_pass_vs_epoch_ratio_cpu_median']:.3f} | {data['fisher_pass_vs_epoch_ratio_wall_median']:.3f} | "
        f"<= {data['targets']['fisher_pass_vs_epoch_ratio']} |",
        "",
        f"{data['model']}; {data['rounds']} interleaved rounds. Fisher memory for {mem['scored_parameters']:,} scored "
        f"entries: scores {mem['scores_bytes'] / 2**20:.1f} MiB (4 B/entry), mask {mem['mask_bytes'] / 2**20:.1f} MiB "
        f"(1 B/entry), threshold working memory {mem['threshold_bytes_per_scored_entry']} B/entry.",
    ])


def render() -> str:
    parts = []
    repro, speed = RESULTS / "child_tuning_reproduction.json", RESULTS / "child_tuning_speed.json"
    if repro.exists():
        data = json.loads(repro.read_text())
        verdicts = verdict_table(data)
        parts += ["### Low-resource reproduction (MiniLM, 1,000 training examples)", "",
                  reproduction_table(data), "", *([verdicts, ""] if verdicts else []),
                  "![reproduction](benchmarks/results/child_tuning_reproduction.png)", ""]
    if speed.exists():
        parts += ["### Cost", "", speed_table(json.loads(speed.read_text())), ""]
    return "\n".join(parts)


def main() -> None:
    render_cli(README, START, END, render)


if __name__ == "__main__":
    main()
