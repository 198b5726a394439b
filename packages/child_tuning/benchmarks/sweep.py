"""Child-Tuning_D against vanilla fine-tuning over reserve_p, learning rate and epochs, on rt-polarity and trec.

    .venv/bin/python packages/child_tuning/benchmarks/sweep.py [--parallel 2]
      -> packages/child_tuning/benchmarks/results/child_tuning_sweep.json (resumable: finished runs are skipped)
    .venv/bin/python packages/child_tuning/benchmarks/render_table.py   (README block from the json)

Data and training as the reproduction (packages/child_tuning/benchmarks/reproduce.py: its `write_data` and flags):
all-MiniLM-L6-v2, the same 1,000-example seeded subset of each builtin train split, full validation and test
splits, batch 16, 10% warm-up, weight decay 0.01, max_length 64, one torch thread per run, bf16 autocast where it is
fast and fp32 otherwise (`--precision`, recorded per run: runs pair within one precision). Swept:
Child-Tuning_D with reserve_p {0.1, 0.3, 0.6} x learning rate {5e-5, 2e-4} x epochs {3}, and vanilla fine-tuning at
each (learning rate, epochs), seeds 1, 2, 3: 2 tasks x 8 configurations x 3 seeds = 48 runs. Every run of a task
trains on the same subset, so runs pair by seed. `--smoke`: tiny-bert, 128 examples, 8 steps, one seed, trec,
one D configuration and its vanilla run (the test of this script). `--reserve_ps` / `--lrs` run a part of the grid;
`--epochs` runs other epoch counts (each with its vanilla runs).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# tools/bench first: its `sweep` module (the helper), not this file, is what `import sweep` must find
sys.path.insert(0, str(ROOT / "tools" / "bench"))
sys.path.insert(1, str(Path(__file__).resolve().parent))
from reproduce import COMMON, write_data  # noqa: E402
from sweep import (  # noqa: E402
    add_precision_option,
    plmkit_train,
    precision_flags,
    resolve_precision,
    run_sweep,
)

JSON = Path(__file__).parent / "results" / "child_tuning_sweep.json"
TASKS = ("rt-polarity", "trec")
RESERVE_P = (0.1, 0.3, 0.6)
LRS = (5e-5, 2e-4)
EPOCHS = (3,)
SEEDS = (1, 2, 3)


def key(r: dict) -> tuple:
    return r["task"], r["method"], r["reserve_p"], r["lr"], r["epochs"], r["seed"], r.get("precision", "bf16")


def jobs(tasks, reserve_ps, lrs, epochs, seeds, precision: str = "bf16") -> list[dict]:
    """Seed-major, so an interrupted sweep still covers every configuration with its first seeds."""
    out = []
    for seed in seeds:
        for task in tasks:
            for lr in lrs:
                for ep in epochs:
                    for method, p in [("vanilla", None), *(("CT-D", p) for p in reserve_ps)]:
                        out.append({"task": task, "method": method, "reserve_p": p, "lr": lr, "epochs": ep,
                                    "seed": seed, "precision": precision})
    return out


def common_flags(model: str, lr: float | str, epochs: int | str, precision: str = "bf16") -> list[str]:
    """The reproduction's flags with this run's model, learning rate, epochs and precision."""
    flags = list(COMMON)
    for name, value in (("--model_name_or_path", model), ("--learning_rate", lr), ("--num_train_epochs", epochs)):
        flags[flags.index(name) + 1] = str(value)
    at = flags.index("--bf16")
    return flags[:at] + precision_flags(precision) + flags[at + 2 :]


def make_run_one(data: dict[str, list[str]], model: str, extra: list[str], work: str | None):
    def run_one(job: dict) -> dict:
        method = (["--method", "finetune"] if job["method"] == "vanilla" else
                  ["--method", "child_tuning", "--method.mode", "D", "--method.reserve_p", str(job["reserve_p"])])
        argv = [*common_flags(model, job["lr"], job["epochs"], job.get("precision", "bf16")), *data[job["task"]], *method,
                "--seed", str(job["seed"]), *extra]
        with tempfile.TemporaryDirectory(dir=work, prefix="ct_sweep_") as tmp:
            m = plmkit_train(argv, Path(tmp) / "run")
        return {"test_accuracy": m["test_accuracy"], "val_accuracy": m["eval_accuracy"], "cpu_s": m["process_cpu_s"],
                "train_runtime_s": round(m["train_runtime"], 1)}

    return run_one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--reserve_ps", nargs="+", type=float, default=list(RESERVE_P), help="a part of the grid")
    parser.add_argument("--lrs", nargs="+", type=float, default=list(LRS), help="a part of the grid")
    parser.add_argument("--epochs", nargs="+", type=int, default=list(EPOCHS), help="epochs (the grid: 3)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once, one torch thread each")
    add_precision_option(parser)
    parser.add_argument("--n_train", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("outputs/child_tuning_sweep"),
                        help="data subsets (csv) and the temporary run folders")
    parser.add_argument("--json", type=Path, default=JSON)
    parser.add_argument("--smoke", action="store_true", help="tiny-bert, 128 examples, 8 steps, 1 seed, trec")
    args = parser.parse_args()
    model, tasks, seeds, reserve_ps, lrs, extra = "minilm", args.tasks, args.seeds, args.reserve_ps, args.lrs, []
    if args.smoke:
        model, tasks, seeds, reserve_ps, lrs, extra = "tiny-bert", ["trec"], seeds[:1], (0.3,), (2e-4,), [
            "--max_steps", "8"]
        args.n_train = 128
    precision = resolve_precision(args.precision)
    data = {task: write_data(task, args.work / "data" / f"{task}_{args.n_train}", args.n_train) for task in tasks}
    settings = {"model": model, "n_train": args.n_train, "train_subset": "builtin train split, shuffle(seed=0), first "
                "n_train (as reproduce.py)", "eval": "full validation and test splits",
                "flags": [*common_flags(model, "LR", "EPOCHS", "fp32"), *extra],
                "precision": "per run (its 'precision' field; bf16 runs add --bf16 true)", "threads_per_run": 1}
    run_sweep(args.json, jobs(tasks, reserve_ps, lrs, args.epochs, seeds, precision),
              make_run_one(data, model, extra, str(args.work)), key, args.parallel, settings=settings)


if __name__ == "__main__":
    main()
