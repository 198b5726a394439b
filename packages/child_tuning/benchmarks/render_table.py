"""Render the Child-Tuning README's results tables from packages/child_tuning/benchmarks/results/child_tuning_*.json.

Replaces the text between `<!-- results:start -->` and `<!-- results:end -->` in packages/child_tuning/README.md
(reproduction and cost), and between `<!-- ct-sweep:start -->` and `<!-- ct-sweep:end -->` (the Child-Tuning_D
sweep, child_tuning_sweep.json; "not run yet" without it). Tables are generated, never typed.

    python packages/child_tuning/benchmarks/render_table.py [--check]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from readme_block import mean_std, paired_verdict, render_cli, replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "packages" / "child_tuning" / "benchmarks" / "results"
README = ROOT / "packages" / "child_tuning" / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
SWEEP = RESULTS / "child_tuning_sweep.json"
SWEEP_START, SWEEP_END = "<!-- ct-sweep:start -->", "<!-- ct-sweep:end -->"


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


def _lr(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")  # 2e-4


def render_sweep(path: Path = SWEEP) -> str:
    """The Child-Tuning_D sweep per task: mean ± std per configuration, each D configuration against vanilla
    fine-tuning at the same learning rate and epochs (`paired_verdict`, runs paired by seed), and where D helps."""
    if not path.exists():
        return ("Not run yet (`packages/child_tuning/benchmarks/sweep.py` writes "
                "`benchmarks/results/child_tuning_sweep.json`).")
    data = json.loads(path.read_text())
    s = data["settings"]
    cells: dict[tuple, dict[str, dict[int, float]]] = {}
    for r in data["runs"]:
        config = (r["task"], r["lr"], r["epochs"], r["method"], r["reserve_p"], r.get("precision", "bf16"))
        cell = cells.setdefault(config, {"test": {}, "val": {}, "cpu": {}})
        cell["test"][r["seed"]], cell["val"][r["seed"]], cell["cpu"][r["seed"]] = (
            r["test_accuracy"], r["val_accuracy"], r["cpu_s"])

    def pct(values: dict[int, float]) -> str:
        mean, std = mean_std([100 * v for v in values.values()])
        return f"{mean:.2f} ± {std:.2f}"

    precisions = sorted({c[5] for c in cells})
    lines = [
        f"Setup: {s['model']}, {s['n_train']:,} training examples (the reproduction's subset), {s['eval']}, seeds "
        f"{sorted({r['seed'] for r in data['runs']})}, batch 16, 10% warm-up, weight decay 0.01, max_length 64, "
        + ("bf16" if precisions == ["bf16"] else "bf16 autocast unless a row says fp32 (runs pair within one precision)")
        + ", one thread per run. Accuracy in %, mean ± std over the "
        "seeds (n = seeds finished); CPU s: CPU seconds of one training process (start-up, training, evaluation), "
        "mean. Verdicts: D - vanilla at the same learning rate and epochs in test accuracy points, runs paired by "
        "seed: mean difference +- its standard error; **supported** only where the mean exceeds twice its standard "
        "error, **contradicted** below minus twice, otherwise within noise.",
        "",
        "| task | method | lr | epochs | n | test acc. | val acc. | CPU s | D - vanilla (same lr, epochs) |",
        "|---|---|---|---|---|---:|---:|---:|---|",
    ]
    outcome: dict[str, list[str]] = {}
    for c in sorted(cells, key=lambda c: (c[0], c[5], c[1], c[2], c[3] != "vanilla", c[4] or 0.0)):
        task, lr, epochs, method, p, precision = c
        cell, base = cells[c], cells.get((task, lr, epochs, "vanilla", None, precision))
        verdict = ""
        if method != "vanilla" and base is not None and set(cell["test"]) & set(base["test"]):
            v = paired_verdict(cell["test"], base["test"])
            verdict = str(v)
            outcome.setdefault(v.verdict, []).append(
                f"{task} p={p} lr {_lr(lr)} {epochs} ep.{'' if precision == 'bf16' else ' ' + precision} "
                f"({v.mean_difference:+.1f})")
        name = ("vanilla" if method == "vanilla" else f"{method} (p={p})") + ("" if precision == "bf16" else f", {precision}")
        lines.append(f"| {task} | {name} | {_lr(lr)} | {epochs} | {len(cell['test'])} | {pct(cell['test'])} | "
                     f"{pct(cell['val'])} | {statistics.mean(cell['cpu'].values()):.0f} | {verdict} |")
    lines.append("")
    for verdict, label in (("supported", "D helps (supported)"), ("contradicted", "D hurts (contradicted)"),
                           ("within noise", "within noise"), ("no verdict", "no verdict yet (one seed)")):
        if outcome.get(verdict):
            lines.append(f"- {label}: " + "; ".join(outcome[verdict]) + ".")
    return "\n".join(lines)


def main() -> None:
    check = "--check" in sys.argv[1:]
    if replace_block(README, SWEEP_START, SWEEP_END, render_sweep(), check=check) and check:
        sys.exit(f"{README} is out of date: run {Path(sys.argv[0]).name}")
    render_cli(README, START, END, render)


if __name__ == "__main__":
    main()
