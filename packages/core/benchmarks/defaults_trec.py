"""Every installed method with its default options on a multi-class task it was not tuned for, as a new user runs
it: `plmkit train --data trec --model_name_or_path minilm --method NAME --num_train_epochs 2` and nothing else
(TrainingArguments' defaults: batch 8, lr 5e-5, no warm-up; max_length 128), seed 42, one torch thread per run.
TREC has 6 classes (4,305 training questions); the majority class of its test split is the floor. Writes
packages/core/benchmarks/results/defaults_trec.json; `--render` writes the core README block.

    python packages/core/benchmarks/defaults_trec.py [--methods finetune pst ...] [--render [--check]]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools" / "bench"))
from readme_block import render_cli  # noqa: E402

RESULTS = Path(__file__).parent / "results"
JSON = RESULTS / "defaults_trec.json"
README = ROOT / "packages" / "core" / "README.md"
START, END = "<!-- defaults-trec:start -->", "<!-- defaults-trec:end -->"
PRUNING = {"pruning", "pst", "cap", "structured_pruning", "dynamic_sparsification"}


def majority_share() -> float:
    from plmkit.core.data import load_builtin

    labels = load_builtin("trec").splits["test"]["label"]
    return Counter(labels).most_common(1)[0][1] / len(labels)


def run(method: str, work: Path) -> dict:
    out = work / method
    argv = [sys.executable, "-m", "plmkit.core.cli", "train", "--data", "trec", "--model_name_or_path", "minilm",
            "--method", method, "--num_train_epochs", "2", "--seed", "42", "--output_dir", str(out),
            "--overwrite_output_dir", "--num_threads", "1", "--report_to", "none", "--disable_tqdm", "true",
            "--save_strategy", "no"]
    start = time.process_time()
    wall = time.time()
    with (work / f"{method}.log").open("w") as log:
        proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, "PLMKIT_NUM_THREADS": "1"}, stdout=log,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = (work / f"{method}.log").read_text().strip().splitlines()[-1:]
        return {"method": method, "error": tail[0] if tail else f"exit {proc.returncode}"}
    metrics = json.loads((out / "metrics.json").read_text())
    return {"method": method, "test_accuracy": metrics["test_accuracy"], "test_macro_f1": metrics.get("test_macro_f1"),
            "wall_s": round(time.time() - wall, 1), "cpu_s_children": round(time.process_time() - start, 1)}


def render() -> str:
    data = json.loads(JSON.read_text())
    floor = data["majority"]
    finetune = next((r for r in data["runs"] if r["method"] == "finetune" and "test_accuracy" in r), None)
    lines = [f"Setup: {' '.join(data['setup'].split())}", "",
             f"Majority class of the test split: {100 * floor:.1f}%.", "",
             "| method (defaults) | test accuracy % | vs majority | vs fine-tuning | target |", "|---|---|---|---|---|"]
    for r in sorted(data["runs"], key=lambda r: r["method"]):
        if "error" in r:
            lines.append(f"| `{r['method']}` | error: {r['error']} | | | |")
            continue
        acc = r["test_accuracy"]
        gap = "" if finetune is None else f"{100 * (acc - finetune['test_accuracy']):+.1f}"
        target = "fine-tuning - 10" if r["method"] in PRUNING else "fine-tuning - 5"
        lines.append(f"| `{r['method']}` | {100 * acc:.1f} | {100 * (acc - floor):+.1f} | {gap} | {target} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+")
    parser.add_argument("--work_dir", default="outputs/defaults_trec")
    parser.add_argument("--render", action="store_true")
    args, _ = parser.parse_known_args()
    if args.render:
        render_cli(README, START, END, render)
        return
    from plmkit.core.training import METHODS

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data = json.loads(JSON.read_text()) if JSON.exists() else {"runs": []}
    data["setup"] = __doc__.split("\n\n")[0]
    data["majority"] = majority_share()
    done = {r["method"] for r in data["runs"] if "test_accuracy" in r}
    for method in args.methods or METHODS.names():
        if method in done:
            continue
        data["runs"] = [r for r in data["runs"] if r["method"] != method] + [run(method, work)]
        RESULTS.mkdir(parents=True, exist_ok=True)
        JSON.write_text(json.dumps(data, indent=1))
        print(json.dumps(data["runs"][-1]), flush=True)


if __name__ == "__main__":
    main()
