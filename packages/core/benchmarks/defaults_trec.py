"""Every installed classification method with its default method options on a multi-class task it was not tuned for, as a
new user runs it: `plmkit train --data trec --model_name_or_path minilm --method NAME` plus the contract kit's short
budget and no method option (the first 1,024 of TREC's 4,305 training questions, 6 classes; 2 epochs of batch 16 = 128
steps, lr 1e-4, max_length 16, bf16, evaluation batch 64, seed 42; one torch thread per run). The majority class of the
test split is the floor; the same runs are the contract kit's `test_default_options_learn_trec` (beat the floor by 20
points). Writes packages/core/benchmarks/results/defaults_trec.json; `--render` writes the core README block.

    python packages/core/benchmarks/defaults_trec.py [--methods finetune pst ...] [--render [--check]]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools" / "bench"))
from readme_block import replace_block  # noqa: E402

RESULTS = Path(__file__).parent / "results"
JSON = RESULTS / "defaults_trec.json"
README = ROOT / "packages" / "core" / "README.md"
START, END = "<!-- defaults-trec:start -->", "<!-- defaults-trec:end -->"
PRUNING = {"pruning", "pst", "cap", "structured_pruning", "dynamic_sparsification"}


def majority_share() -> float:
    from plmkit.core.data import load_builtin

    labels = load_builtin("trec").splits["test"]["label"]
    return Counter(labels).most_common(1)[0][1] / len(labels)


def package_of(method: str) -> str:
    """The package folder a method comes from (`plmkit.pst.method` -> `pst`)."""
    from plmkit.core.training import METHODS

    return METHODS.get(method).__module__.split(".")[1]


def budget(epochs: int | None) -> list[str]:
    """The contract kit's budget, with `epochs` instead of its 2 when given."""
    from plmkit.core.testing.contract import DEFAULT_BUDGET

    flags = list(DEFAULT_BUDGET)
    if epochs is not None:
        flags[flags.index("--num_train_epochs") + 1] = str(epochs)
    return flags


def run(method: str, work: Path, epochs: int | None = None) -> dict:
    name = method if epochs is None else f"{method}_{epochs}epochs"
    out = work / name
    argv = [sys.executable, "-m", "plmkit.core.cli", "train", "--data", "trec", "--model_name_or_path", "minilm",
            "--method", method, *budget(epochs), "--output_dir", str(out),
            "--overwrite_output_dir", "--num_threads", "1", "--report_to", "none", "--disable_tqdm", "true",
            "--save_strategy", "no"]
    start = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    wall = time.time()
    record = {"method": method, "package": package_of(method), "epochs": epochs}
    with (work / f"{name}.log").open("w") as log:
        proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, "PLMKIT_NUM_THREADS": "1"}, stdout=log,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = (work / f"{name}.log").read_text().strip().splitlines()[-1:]
        return {**record, "error": tail[0] if tail else f"exit {proc.returncode}"}
    metrics = json.loads((out / "metrics.json").read_text())
    return {**record, "test_accuracy": metrics["test_accuracy"], "test_macro_f1": metrics.get("test_macro_f1"),
            "wall_s": round(time.time() - wall, 1),
            "cpu_s": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - start, 1)}


def render(package: str | None = None) -> str:
    """The core README's table (every method), or one package's rows with the command a new user types first."""
    data = json.loads(JSON.read_text())
    floor = data["majority"]
    finetune = next((r for r in data["runs"] if r["method"] == "finetune" and "test_accuracy" in r), None)
    runs = sorted((r for r in data["runs"] if (package is None or r.get("package") == package)
                   and r.get("epochs") is None), key=lambda r: r["method"])
    lines = [f"Setup: {' '.join(data['setup'].split())}", "",
             f"Majority class of the test split: {100 * floor:.1f}%.", ""]
    if package is not None:
        lines = ["With its default options on TREC's 6 classes (`packages/core/benchmarks/defaults_trec.py`: the first "
                 "1,024 training questions, 128 steps of batch 16, lr 1e-4, max_length 16, bf16, seed 42; majority "
                 f"class {100 * floor:.1f}%, plain fine-tuning {100 * finetune['test_accuracy']:.1f}%):", ""]
    lines += ["| method (defaults) | test accuracy % | vs majority | vs fine-tuning | target | met |",
              "|---|---|---|---|---|---|"]
    for r in runs:
        if "error" in r:
            lines.append(f"| `{r['method']}` | error: {r['error']} | | | | no |")
            continue
        acc, ft = r["test_accuracy"], finetune["test_accuracy"] if finetune else None
        allowed = 0.10 if r["method"] in PRUNING else 0.05
        gap = "" if ft is None else f"{100 * (acc - ft):+.1f}"
        met = "" if ft is None else ("yes" if acc >= ft - allowed and acc >= floor + 0.2 else "no")
        lines.append(f"| `{r['method']}` | {100 * acc:.1f} | {100 * (acc - floor):+.1f} | {gap} | "
                     f"fine-tuning - {round(100 * allowed)} and majority + 20 | {met} |")
    longer = [r for r in data["runs"] if r.get("epochs") is not None and "test_accuracy" in r
              and (package is None or r.get("package") == package)]
    if longer:
        short = {r["method"]: r for r in runs if "test_accuracy" in r}
        lines += ["", "The same command with more epochs (does the budget explain a gap?):", "",
                  "| method (defaults) | epochs | test accuracy % | vs 2 epochs | vs fine-tuning (2 epochs) |",
                  "|---|---|---|---|---|"]
        for r in sorted(longer, key=lambda r: (r["method"], r["epochs"])):
            base = short.get(r["method"])
            vs = "" if base is None else f"{100 * (r['test_accuracy'] - base['test_accuracy']):+.1f}"
            ft = "" if finetune is None else f"{100 * (r['test_accuracy'] - finetune['test_accuracy']):+.1f}"
            lines.append(f"| `{r['method']}` | {r['epochs']} | {100 * r['test_accuracy']:.1f} | {vs} | {ft} |")
    if package is not None:
        lines += ["", "The command: `plmkit train --data trec --model_name_or_path minilm --method NAME` with the budget "
                  "flags above (`DEFAULT_BUDGET` in `plmkit.core.testing.contract`)."]
    return "\n".join(lines)


def render_all() -> None:
    """The core README's block, and the block of every package README that has the markers."""
    check = "--check" in sys.argv[1:]
    stale = [README] if replace_block(README, START, END, render(), check=check) else []
    for readme in sorted(ROOT.glob("packages/*/README.md")):
        if readme != README and START in readme.read_text():
            if replace_block(readme, START, END, render(readme.parent.name), check=check):
                stale.append(readme)
    if check and stale:
        sys.exit(f"out of date: {', '.join(map(str, stale))}: run defaults_trec.py --render")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+")
    parser.add_argument("--work_dir", default="outputs/defaults_trec")
    parser.add_argument("--epochs", type=int, help="train this many epochs instead of the kit's 2 (a budget check)")
    parser.add_argument("--render", action="store_true")
    args, _ = parser.parse_known_args()
    if args.render:
        render_all()
        return
    from plmkit.core.testing.contract import contract_cases

    classification = {c.method for c in contract_cases() if c.task == "classification" and c.trec_defaults}

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data = json.loads(JSON.read_text()) if JSON.exists() else {"runs": []}
    data["setup"] = __doc__.split("\n\n")[0]
    data["majority"] = majority_share()
    done = {(r["method"], r.get("epochs")) for r in data["runs"] if "test_accuracy" in r}
    for method in args.methods or sorted(classification):
        if (method, args.epochs) in done:
            continue
        data["runs"] = [r for r in data["runs"] if (r["method"], r.get("epochs")) != (method, args.epochs)]
        data["runs"].append(run(method, work, args.epochs))
        RESULTS.mkdir(parents=True, exist_ok=True)
        JSON.write_text(json.dumps(data, indent=1))
        print(json.dumps(data["runs"][-1]), flush=True)


if __name__ == "__main__":
    main()
