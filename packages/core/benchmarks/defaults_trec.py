"""Every installed classification method with its default method options on a multi-class task it was not tuned for, as a
new user runs it: `plmkit train --data trec --model_name_or_path minilm --method NAME` plus the contract kit's short
budget and no method option (the first 1,024 of TREC's 4,305 training questions, 6 classes; 2 epochs of batch 16 = 128
steps, lr 1e-4, max_length 16, evaluation batch 64, seed 42; one torch thread per run; bf16 autocast on hardware
with native bf16, else fp32, as the kit's test runs it: each row names its precision). A method whose
defaults refuse that budget with an error naming the option (the unstructured pruning methods need 500 steps,
CP-Tuning 4 examples of each class per batch) also runs at the budget its contract case names (`trec_budget`). The
majority class of the test split is the floor; the kit's `test_default_options_learn_trec` runs each method at its
contract case's budget and asserts it beats the floor by 20 points. Writes
packages/core/benchmarks/results/defaults_trec.json; `--render` writes the core README block.

    python packages/core/benchmarks/defaults_trec.py [--methods finetune pst ...] [--budget JSON] [--flags FLAGS]
        [--render [--check]]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
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


def _name(method: str, budget: dict, extra: list[str]) -> str:
    parts = [method, *(f"{k}{v}" for k, v in sorted(budget.items())), *(f.lstrip("-") for f in extra)]
    return "_".join(parts).replace("/", "-")


def run(method: str, work: Path, budget: dict, extra: list[str] | None = None) -> dict:
    """One `plmkit train` of `method` on the kit's budget with `budget`'s changes, with no method option unless
    `extra` gives some (a check of what a default costs)."""
    from plmkit.core.testing.contract import trec_check_budget

    extra = list(extra or [])
    out = work / _name(method, budget, extra)
    flags = trec_check_budget(budget)  # as the kit's test runs it: bf16 only where the hardware has it
    argv = [sys.executable, "-m", "plmkit.core.cli", "train", "--data", "trec", "--model_name_or_path", "minilm",
            "--method", method, *flags, *extra, "--output_dir", str(out),
            "--overwrite_output_dir", "--num_threads", "1", "--report_to", "none", "--disable_tqdm", "true",
            "--save_strategy", "no"]
    start = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    wall = time.time()
    record = {"method": method, "package": package_of(method), "budget": budget, "flags": extra,
              "precision": "bf16" if "--bf16" in flags else "fp32"}
    log = out.with_suffix(".log")
    with log.open("w") as f:
        proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, "PLMKIT_NUM_THREADS": "1"}, stdout=f,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        errors = [line for line in log.read_text().splitlines() if line.startswith("plmkit: error:")]
        return {**record, "error": errors[-1] if errors else f"exit {proc.returncode}"}
    metrics = json.loads((out / "metrics.json").read_text())
    return {**record, "test_accuracy": metrics["test_accuracy"], "test_macro_f1": metrics.get("test_macro_f1"),
            "wall_s": round(time.time() - wall, 1),
            "cpu_s": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - start, 1)}


def kit_budgets() -> dict[str, dict]:
    """Each method's changes to the kit's TREC budget (`ContractCase.trec_budget`; none unless its defaults refuse
    the kit's budget with an error naming the option)."""
    from plmkit.core.testing.contract import contract_cases

    budgets: dict[str, dict] = {}
    for case in contract_cases():
        if case.task == "classification" and case.trec_defaults:
            budgets.setdefault(case.method, dict(case.trec_budget))
    return budgets


def describe(budget: dict) -> str:
    """'batch 16 x 2 epochs (128 steps)' for the kit's budget with `budget`'s changes (the numbers read from the
    kit's flags)."""
    from plmkit.core.testing.contract import trec_budget

    flags = trec_budget(budget)

    def value(name: str) -> str:
        return flags[flags.index(f"--{name}") + 1]

    batch, epochs = int(value("per_device_train_batch_size")), int(value("num_train_epochs"))
    steps = math.ceil(int(value("max_train_samples")) / batch) * epochs
    lr = f", lr {budget['learning_rate']}" if "learning_rate" in budget else ""
    return f"batch {batch} x {epochs} epochs ({steps} steps){lr}"


def _budget_cell(run: dict) -> str:
    flags = " ".join(run.get("flags", []))
    return f"{describe(run['budget'])}, {run.get('precision', 'bf16')}" + (f", `{flags}`" if flags else "")


def _error_cell(error: str) -> str:
    """'"pst: 128 optimizer steps are too few ..."; names --max_steps, ...': the message's first clause and the
    options it tells the user to set."""
    message = error.removeprefix("plmkit: error: ")
    head = re.split(r" \(|; |, and ", message)[0]
    flags = list(dict.fromkeys(re.findall(r"--[\w.]+", message)))
    return f'"{head}"' + (f"; names {', '.join(f'`{f}`' for f in flags)}" if flags else "")


def _met(run: dict, finetune: dict | None, floor: float) -> str:
    if "error" in run:  # the issue allows a one-line error that names the option to set
        return "yes (stops, naming the option)" if "--method." in run["error"] else "no"
    if finetune is None:
        return ""
    allowed = 0.10 if run["method"] in PRUNING else 0.05
    ok = run["test_accuracy"] >= finetune["test_accuracy"] - allowed and run["test_accuracy"] >= floor + 0.2
    return "yes" if ok else "no"


def render(package: str | None = None) -> str:
    """The core README's table (every method), or one package's rows with the command a new user types first."""
    data = json.loads(JSON.read_text())
    floor = data["majority"]
    kit = data.get("kit_budgets", {})
    finetune = {describe(r["budget"]): r for r in data["runs"]
                if r["method"] == "finetune" and "test_accuracy" in r and not r.get("flags")}
    mine = [r for r in data["runs"] if package is None or r.get("package") == package]
    # Each method at the kit's budget and, where its contract case changes that budget, at the changed one.
    shown = sorted((r for r in mine if not r.get("flags")
                    and (not r["budget"] or r["budget"] == kit.get(r["method"]))),
                   key=lambda r: (r["method"], bool(r["budget"])))
    lines = [f"Setup: {' '.join(data['setup'].split())}", "",
             f"Majority class of the test split: {100 * floor:.1f}%.", ""]
    if package is not None:
        ft = finetune.get(describe({}))
        lines = ["With its default options on TREC's 6 classes (`packages/core/benchmarks/defaults_trec.py`: the first "
                 "1,024 training questions, lr 1e-4, max_length 16, seed 42; each row names its precision; majority class "
                 f"{100 * floor:.1f}%" + (f", plain fine-tuning {100 * ft['test_accuracy']:.1f}% at batch 16 x 2 epochs"
                                          if ft else "") + "):", ""]
    lines += ["| method (defaults) | budget | test accuracy % | vs majority | vs fine-tuning, same budget | target | met |",
              "|---|---|---|---|---|---|---|"]
    for r in shown:
        target = f"fine-tuning - {10 if r['method'] in PRUNING else 5}, majority + 20; or an error naming the option"
        if "error" in r:
            lines.append(f"| `{r['method']}` | {_budget_cell(r)} | stops: {_error_cell(r['error'])} | | | "
                         f"{target} | {_met(r, None, floor)} |")
            continue
        acc, ft = r["test_accuracy"], finetune.get(describe(r["budget"]))
        gap = "" if ft is None else f"{100 * (acc - ft['test_accuracy']):+.1f}"
        lines.append(f"| `{r['method']}` | {_budget_cell(r)} | {100 * acc:.1f} | {100 * (acc - floor):+.1f} | "
                     f"{gap} | {target} | {_met(r, ft, floor)} |")
    other = [r for r in mine if "test_accuracy" in r and r not in shown and r["method"] != "finetune"]
    if other:
        ft = finetune.get(describe({}))
        lines += ["", "Other budgets and options (does the budget, or the default itself, explain a gap?):", "",
                  "| method (defaults) | budget | test accuracy % | vs fine-tuning at batch 16 x 2 epochs |",
                  "|---|---|---|---|"]
        for r in sorted(other, key=lambda r: (r["method"], describe(r["budget"]))):
            vs = "" if ft is None else f"{100 * (r['test_accuracy'] - ft['test_accuracy']):+.1f}"
            lines.append(f"| `{r['method']}` | {_budget_cell(r)} | {100 * r['test_accuracy']:.1f} | {vs} |")
    if package is not None:
        lines += ["", "The command: `plmkit train --data trec --model_name_or_path minilm --method NAME` with the budget "
                  "flags above (`DEFAULT_BUDGET` in `plmkit.core.testing.contract`, changed where the method's "
                  "contract case says `trec_budget`)."]
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
    parser.add_argument("--budget", default="{}",
                        help='JSON changes to the kit\'s budget for every method given (a budget check), e.g. '
                             '\'{"num_train_epochs": 8}\'; default: the kit\'s, and each method\'s own where it has one')
    parser.add_argument("--flags", default="", help="method options for every method given (a check of a default), "
                        "e.g. '--method.sparsity 0.5'")
    parser.add_argument("--render", action="store_true")
    args, _ = parser.parse_known_args()
    if args.render:
        render_all()
        return
    kit = kit_budgets()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data = json.loads(JSON.read_text()) if JSON.exists() else {"runs": []}
    data["setup"] = __doc__.split("\n\n")[0]
    data["majority"] = majority_share()
    data["kit_budgets"] = kit
    asked, extra = json.loads(args.budget), args.flags.split()
    jobs = []  # (method, budget changes)
    for method in args.methods or sorted(kit):
        jobs.append((method, asked))
        if not asked and not extra and kit.get(method):
            jobs.append((method, kit[method]))

    def key(method: str, budget: dict, flags: list[str]) -> tuple:
        return method, json.dumps(budget, sort_keys=True), " ".join(flags)

    done = {key(r["method"], r["budget"], r.get("flags", [])) for r in data["runs"] if "test_accuracy" in r}
    for method, budget in jobs:
        this = key(method, budget, extra)
        if this in done:
            continue
        data["runs"] = [r for r in data["runs"] if key(r["method"], r["budget"], r.get("flags", [])) != this]
        data["runs"].append(run(method, work, budget, extra))
        RESULTS.mkdir(parents=True, exist_ok=True)
        JSON.write_text(json.dumps(data, indent=1))
        print(json.dumps(data["runs"][-1]), flush=True)


if __name__ == "__main__":
    main()
