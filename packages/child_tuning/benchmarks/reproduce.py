"""Reproduction: vanilla fine-tuning vs Child-Tuning_F vs Child-Tuning_D, MiniLM, the paper's low-resource setting.

The paper's low-resource experiment trains on 1,000-example subsets. Here: all-MiniLM-L6-v2 on 1,000 training
examples of the builtin `rt-polarity` and `trec` tasks, evaluated on their full validation and test splits.
The subset is a seeded random sample (seed 0) of the builtin train split, the same for every run (before the
v2 data cache the split was stored in source order, 97% positive in its first 1,000 rt-polarity sentences, so
`--max_train_samples` did not give a usable subset). Budget for 2 shared CPU cores: 3 epochs, batch 16, lr 1e-4, warmup 10%, weight decay
0.01, max_length 64, bf16 autocast, one torch thread. `reserve_p` is chosen on the validation split with one seed
(p_F in {0.2, 0.4}, p_D in {0.1, 0.3}: the ends of the paper's grids, for time), then every method runs with 5 seeds.
Writes packages/child_tuning/benchmarks/results/child_tuning_reproduction.json and .png;
`packages/child_tuning/benchmarks/render_table.py` renders the README table from the json.

    PLMKIT_NUM_THREADS=1 python packages/child_tuning/benchmarks/reproduce.py [--seeds 13 21 42 87 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
JSON = RESULTS / "child_tuning_reproduction.json"
PLOT = RESULTS / "child_tuning_reproduction.png"
TASKS = ("rt-polarity", "trec")
GRID = {"F": (0.2, 0.4), "D": (0.1, 0.3)}
SELECTION_SEED = 42
COMMON = [
    "--model_name_or_path", "minilm", "--max_length", "64", "--num_train_epochs", "3",
    "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "128", "--learning_rate", "1e-4",
    "--warmup_steps", "0.1", "--weight_decay", "0.01", "--bf16", "true", "--eval_strategy", "no",
    "--save_strategy", "no", "--logging_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
    "--num_threads", "1", "--overwrite_output_dir", "true",
]


def write_data(task: str, folder: Path, n_train: int) -> list[str]:
    """A seeded 1,000-example training subset and the full validation/test splits, as csv files."""
    from plmkit.core.data import load_builtin

    folder.mkdir(parents=True, exist_ok=True)
    splits = load_builtin(task).splits
    parts = {"train": splits["train"].shuffle(seed=0).select(range(n_train)), **{s: splits[s] for s in ("validation", "test")}}
    flags = []
    for split, ds in parts.items():
        ds.select_columns(["text", "label"]).to_csv(str(folder / f"{split}.csv"), index=False)
        flags += [f"--{split}_file", str(folder / f"{split}.csv")]
    return flags


def method_flags(method: str, reserve_p: float | None) -> list[str]:
    if method == "vanilla":
        return ["--method", "finetune"]
    return ["--method", "child_tuning", "--method.mode", method[-1], "--method.reserve_p", str(reserve_p)]


def run_dir(work: Path, task: str, method: str, reserve_p: float | None, seed: int) -> Path:
    return work / f"{task}_{method}_{reserve_p}_{seed}"


def read_run(out: Path, task: str, method: str, reserve_p: float | None, seed: int) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    return {"task": task, "method": method, "reserve_p": reserve_p, "seed": seed, "val_accuracy": m["eval_accuracy"],
            "test_accuracy": m["test_accuracy"], "train_runtime": m["train_runtime"]}


def run_one(task: str, method: str, reserve_p: float | None, seed: int, data: list[str], work: Path) -> dict:
    """Train one configuration (or reuse its finished run folder) and return its metrics."""
    from plmkit.core.cli import main as plmkit

    out = run_dir(work, task, method, reserve_p, seed)
    if not (out / "metrics.json").exists():
        start = time.perf_counter()
        rc = plmkit(["train", *COMMON, *data, *method_flags(method, reserve_p), "--seed", str(seed), "--output_dir", str(out)])
        if rc != 0:
            raise SystemExit(f"run {out.name} failed")
        print(f"[repro] {out.name}: {time.perf_counter() - start:.0f} s", flush=True)
    return read_run(out, task, method, reserve_p, seed)


def collect(work: Path, seeds: list[int]) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Every finished run of the plan, read from the run folders (several processes may share `work`)."""
    runs: list[dict] = []
    selected: dict[str, dict[str, float]] = {}
    for task in TASKS:
        chosen = {}
        for mode, grid in GRID.items():
            done = [p for p in grid if (run_dir(work, task, f"CT-{mode}", p, SELECTION_SEED) / "metrics.json").exists()]
            trials = [read_run(run_dir(work, task, f"CT-{mode}", p, SELECTION_SEED), task, f"CT-{mode}", p, SELECTION_SEED)
                      for p in done]
            runs += [{**t, "stage": "selection"} for t in trials]
            if len(trials) == len(grid):
                chosen[f"CT-{mode}"] = max(trials, key=lambda t: t["val_accuracy"])["reserve_p"]
        if len(chosen) < len(GRID):
            continue
        selected[task] = chosen
        for seed in seeds:  # only seeds every method has finished, so partial results compare like with like
            final = [(run_dir(work, task, m, p, seed), m, p) for m, p in
                     (("vanilla", None), ("CT-F", chosen["CT-F"]), ("CT-D", chosen["CT-D"]))]
            if all((out / "metrics.json").exists() for out, _, _ in final):
                runs += [{**read_run(out, task, m, p, seed), "stage": "final"} for out, m, p in final]
    return runs, selected


def summarise(runs: list[dict]) -> list[dict]:
    """Mean and std per task and method over the finished final-stage runs."""
    rows = []
    for task in TASKS:
        for method in ("vanilla", "CT-F", "CT-D"):
            final = [r for r in runs if r["task"] == task and r["method"] == method and r["stage"] == "final"]
            if not final:
                continue
            test = [100 * r["test_accuracy"] for r in final]
            val = [100 * r["val_accuracy"] for r in final]
            rows.append({
                "task": task, "method": method, "reserve_p": final[0]["reserve_p"], "seeds": len(final),
                "test_mean": statistics.mean(test), "test_std": statistics.stdev(test) if len(test) > 1 else 0.0,
                "val_mean": statistics.mean(val), "val_std": statistics.stdev(val) if len(val) > 1 else 0.0,
            })
    return rows


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.0 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        sub = [r for r in rows if r["task"] == task]
        labels = [r["method"] + (f"\np={r['reserve_p']}" if r["reserve_p"] else "") for r in sub]
        ax.bar(labels, [r["test_mean"] for r in sub], yerr=[r["test_std"] for r in sub], capsize=4,
               color=["#999999", "#4c72b0", "#dd8452"])
        low = min(r["test_mean"] - r["test_std"] for r in sub)
        ax.set_ylim(max(0, low - 3), min(100, max(r["test_mean"] + r["test_std"] for r in sub) + 2))
        ax.set_title(f"{task}: 1,000 training examples, {sub[0]['seeds']} seed(s)", fontsize=10)
        ax.set_ylabel("test accuracy (%), mean ± std")
    fig.suptitle("Child-Tuning on all-MiniLM-L6-v2 (3 epochs, CPU, bf16)", fontsize=11)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)


def save(args: argparse.Namespace) -> list[dict]:
    """Write the json (and plot) of every finished run: the benchmark can stop and resume at any run."""
    runs, selected = collect(args.work, args.seeds)
    rows = summarise(runs)
    planned = len(TASKS) * (sum(len(g) for g in GRID.values()) + 3 * len(args.seeds) - 2 * (SELECTION_SEED in args.seeds))
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = JSON.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({
        "setup": {"model": "minilm (all-MiniLM-L6-v2)", "n_train": args.n_train, "train_subset": "builtin train split, "
                  "shuffle(seed=0), first n_train", "eval": "full validation and test splits", "flags": COMMON,
                  "grid": GRID, "selection_seed": SELECTION_SEED, "selection_metric": "validation accuracy",
                  "seeds": args.seeds},
        "complete": len({(r["task"], r["method"], r["reserve_p"], r["seed"]) for r in runs}) >= planned,
        "selected_reserve_p": selected, "summary": rows, "runs": runs,
        "train_wall_seconds": round(sum(r["train_runtime"] for r in runs), 1),
    }, indent=2))
    tmp.replace(JSON)
    if rows:
        plot(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 21, 42, 87, 100])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="run these (json has all)")
    parser.add_argument("--n_train", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("outputs/child_tuning_reproduction"))
    parser.add_argument("--collect_only", action="store_true", help="only rewrite the json and plot from finished runs")
    args = parser.parse_args()
    for task in [] if args.collect_only else args.tasks:
        data = write_data(task, args.work / "data" / task, args.n_train)
        selected = {}
        for mode, grid in GRID.items():
            trials = []
            for p in grid:
                trials.append(run_one(task, f"CT-{mode}", p, SELECTION_SEED, data, args.work))
                save(args)
            selected[f"CT-{mode}"] = max(trials, key=lambda t: t["val_accuracy"])["reserve_p"]
        # seed by seed, so a partial run has the same seeds for every method
        for seed in args.seeds:
            for method, p in (("vanilla", None), ("CT-F", selected["CT-F"]), ("CT-D", selected["CT-D"])):
                run_one(task, method, p, seed, data, args.work)
                save(args)
    print(json.dumps(save(args), indent=2))


if __name__ == "__main__":
    main()
