"""Reproduction of the structured-pruning study on MiniLM: the three algorithms at several sparsities, and
Dynamic Sparsification trained once and evaluated at every sparsity, on rt-polarity and trec.

    PLMKIT_NUM_THREADS=1 .venv/bin/python packages/structured_pruning/benchmarks/reproduce.py [--tasks trec] [--seeds 13 21 42]
    # the open choices (global ranking, iterative first-order), as run for the README:
    ... structured_pruning_reproduce.py --algorithms first_order_global first_order_iterative \
        --sparsities 0.5 0.7 0.9 --skip_ds

Every run goes through the core's `train` (the same path as `plmkit train`). The training and test subsets are
fixed random samples (seed 0) of the builtin splits written to jsonl. Results are appended to
packages/structured_pruning/benchmarks/results/structured_pruning_reproduction_<task>.json after every run (a partial sweep is still usable,
and a rerun skips the runs already recorded with the same budget); `structured_pruning_render.py` turns the files
into the README tables and plots.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from plmkit.core.config import parse_experiment
from plmkit.core.data import load_builtin
from plmkit.core.run import train
from plmkit.structured_pruning import evaluate_at

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "packages" / "structured_pruning" / "benchmarks" / "results"
WORK = ROOT / "outputs" / "structured_pruning_bench"
LEARNING_RATE = 1e-4
# The three algorithms, and two variants of first-order pruning for the open choices: global instead of per-layer
# ranking, and iterative pruning (3 rounds with retraining) instead of one-shot.
ALGORITHMS: dict[str, list[str]] = {
    "first_order": ["--method.algorithm", "first_order"],
    "movement": ["--method.algorithm", "movement"],
    "l0": ["--method.algorithm", "l0"],
    "first_order_global": ["--method.algorithm", "first_order", "--method.ranking", "global"],
    "first_order_iterative": ["--method.algorithm", "first_order", "--method.iterations", "3"],
}


def write_subset(task: str, n_train: int, n_test: int) -> dict[str, str]:
    """A fixed random subset (seed 0) of the task's train and test splits as jsonl files."""
    data = load_builtin(task)
    folder = WORK / "data" / task
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows = data.splits[split]
        idx = random.Random(0).sample(range(len(rows)), min(n, len(rows)))
        path = folder / f"{split}.jsonl"
        with path.open("w") as f:
            for i in idx:
                f.write(json.dumps({"text": rows[i]["text"], "label": int(rows[i]["label"])}) + "\n")
        files[split] = str(path)
    return files


def base_flags(files: dict[str, str], seed: int, out: Path, epochs: float) -> list[str]:
    return [
        "--model_name_or_path", "minilm", "--train_file", files["train"], "--test_file", files["test"],
        "--max_length", "64", "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64",
        "--learning_rate", str(LEARNING_RATE), "--num_train_epochs", str(epochs),
        "--seed", str(seed), "--bf16", "true", "--output_dir", str(out), "--overwrite_output_dir", "true",
        "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--logging_strategy", "no",
    ]


def run(flags: list[str]) -> tuple[dict[str, float], float]:
    """Train one run; return its metrics and its process CPU seconds."""
    start = time.process_time()
    metrics = train(parse_experiment(flags))
    return metrics, time.process_time() - start


def recorded(task: str) -> list[dict]:
    path = RESULTS / f"structured_pruning_reproduction_{task}.json"
    return json.loads(path.read_text())["runs"] if path.exists() else []


def record(entry: dict) -> None:
    """Append to the task's own file (one process per task can run side by side)."""
    path = RESULTS / f"structured_pruning_reproduction_{entry['task']}.json"
    results = {"runs": recorded(entry["task"])}
    results["runs"].append(entry)
    path.write_text(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=["rt-polarity", "trec"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[13, 21, 42])
    parser.add_argument("--algorithms", nargs="+", default=["first_order", "movement", "l0"], choices=ALGORITHMS)
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--ds_sparsities", nargs="+", type=float, default=[0.0, 0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--n_train", type=int, default=1000)
    parser.add_argument("--n_test", type=int, default=500)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--skip_ds", action="store_true")
    args = parser.parse_args()
    budget = {"n_train": args.n_train, "n_test": args.n_test, "epochs": args.epochs, "max_length": 64,
              "batch": 32, "learning_rate": LEARNING_RATE, "bf16": True, "threads": 1}
    for seed in args.seeds:
        for task in args.tasks:
            files = write_subset(task, args.n_train, args.n_test)
            out = WORK / f"run-{task}"
            done = {(r["seed"], r["method"], r["sparsity"]) for r in recorded(task) if r["budget"] == budget}
            for algorithm in args.algorithms:
                for sparsity in args.sparsities:
                    if (seed, algorithm, sparsity) in done:
                        continue
                    flags = base_flags(files, seed, out, args.epochs) + [
                        "--method", "structured_pruning", *ALGORITHMS[algorithm], "--method.sparsity", str(sparsity)]
                    metrics, cpu = run(flags)
                    record({"task": task, "seed": seed, "method": algorithm, "sparsity": sparsity,
                            "test_accuracy": metrics["test_accuracy"], "train_runtime": metrics["train_runtime"],
                            "cpu_seconds": cpu, "budget": budget})
                    print(f"[bench] {task} seed {seed} {algorithm} {sparsity}: {metrics['test_accuracy']:.4f}",
                          flush=True)
            if args.skip_ds or all((seed, "dynamic_sparsification", s) in done for s in args.ds_sparsities):
                continue
            flags = base_flags(files, seed, out, args.epochs) + ["--method", "dynamic_sparsification"]
            metrics, cpu = run(flags)
            for sparsity in args.ds_sparsities:
                accuracy = evaluate_at(out, sparsity)["test_accuracy"]
                record({"task": task, "seed": seed, "method": "dynamic_sparsification", "sparsity": sparsity,
                        "test_accuracy": accuracy, "train_runtime": metrics["train_runtime"],
                        "cpu_seconds": cpu, "budget": budget})
                print(f"[bench] {task} seed {seed} DS {sparsity}: {accuracy:.4f}", flush=True)


if __name__ == "__main__":
    main()
