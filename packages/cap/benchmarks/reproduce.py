"""Reproduction: CAP vs the same pruning + distillation without the contrastive terms, MiniLM on rt-polarity.

Budget (2 shared CPU cores): a random 1,024-sentence training subset (seeded shuffle of the builtin
train split, v2 data cache), max_length 64, batch 32, bf16, one torch thread per run, evaluated on the whole builtin
test split. One teacher (dense fine-tuning, 3 epochs, lr 1e-4) is trained once per seed and passed to every run with
--method.teacher. Unstructured: 3 epochs (96 steps), lr 1e-4, plmkit's defaults (movement scores start at |W| and
learn at the model's rate; warm-ups 0.2 / 0.3 of the steps; CAP-soft reaches its target sparsity over all matrices);
rows marked "HF-reference scores" (scores start at 0, lr 1e-2, warm-ups 16 / 32 steps) and "lambda 190" (CAP-soft
as the reference, the threshold schedule and lambda set the sparsity) ran before and are kept. Structured: CAP-f and first-order pruning in steps of 25% of heads and neurons (50%: 2 iterations,
75%: 3), 1 epoch of retraining per iteration. Baselines ("MvP+KD", "FO+KD") are the same `cap` runs with both
contrastive terms switched off. Writes packages/cap/benchmarks/results/cap_reproduction.json and a plot;
`packages/cap/benchmarks/render_table.py` renders the README table.

    PLMKIT_NUM_THREADS=1 python packages/cap/benchmarks/reproduce.py [--seeds 1 2 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
JSON = RESULTS / "cap_reproduction.json"
PLOT = RESULTS / "cap_reproduction.png"

NO_CONTRAST = ["--method.unsupervised_banks", "none", "--method.supervised_banks", "none"]
UNSTRUCTURED = ["--num_train_epochs", "3", "--learning_rate", "1e-4", "--method", "cap",
                "--method.min_steps", "0"]  # the budget may be below the default minimum of 500 steps
STRUCTURED = ["--learning_rate", "5e-5", "--method", "cap", "--method.engine", "cap-f",
              "--method.pruning_step", "0.25"]
# (name, family, target, flags)
VARIANTS: list[tuple[str, str, float, list[str]]] = [
    ("CAP-m", "unstructured", 0.9, [*UNSTRUCTURED, "--method.sparsity", "0.9"]),
    ("MvP+KD", "unstructured", 0.9, [*UNSTRUCTURED, "--method.sparsity", "0.9", *NO_CONTRAST]),
    ("CAP-m", "unstructured", 0.97, [*UNSTRUCTURED, "--method.sparsity", "0.97"]),
    ("MvP+KD", "unstructured", 0.97, [*UNSTRUCTURED, "--method.sparsity", "0.97", *NO_CONTRAST]),
    ("CAP-soft", "unstructured", 0.9, [*UNSTRUCTURED, "--method.engine", "cap-soft", "--method.sparsity", "0.9"]),
    ("CAP-f", "structured", 0.5, [*STRUCTURED, "--num_train_epochs", "2", "--method.sparsity", "0.5"]),
    ("FO+KD", "structured", 0.5, [*STRUCTURED, "--num_train_epochs", "2", "--method.sparsity", "0.5", *NO_CONTRAST]),
    ("CAP-f, mean representation", "structured", 0.5, [*STRUCTURED, "--num_train_epochs", "2", "--method.sparsity",
                                                         "0.5", "--method.representation", "mean"]),
    ("CAP-f", "structured", 0.75, [*STRUCTURED, "--num_train_epochs", "3", "--method.sparsity", "0.75"]),
    ("FO+KD", "structured", 0.75, [*STRUCTURED, "--num_train_epochs", "3", "--method.sparsity", "0.75",
                                   *NO_CONTRAST]),
]


def write_data(folder: Path, n_train: int) -> list[str]:
    from plmkit.core.data import load_builtin

    folder.mkdir(parents=True, exist_ok=True)
    splits = load_builtin("rt-polarity").splits
    splits["train"].shuffle(seed=0).select(range(n_train)).select_columns(["text", "label"]).to_csv(
        str(folder / "train.csv"), index=False)
    splits["test"].select_columns(["text", "label"]).to_csv(str(folder / "test.csv"), index=False)
    return ["--train_file", str(folder / "train.csv"), "--test_file", str(folder / "test.csv")]


def _train(out: Path, data: list[str], seed: int, flags: list[str]) -> dict:
    argv = [sys.executable, "-m", "plmkit.core.cli", "train", "--model_name_or_path", "minilm", *data,
            "--max_length", "64", "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "128",
            "--bf16", "true", "--seed", str(seed), "--report_to", "none", "--save_strategy", "no",
            "--disable_tqdm", "true", "--logging_steps", "50", "--overwrite_output_dir", "--output_dir", str(out),
            *flags]
    subprocess.run(argv, check=True, env={**os.environ, "PLMKIT_NUM_THREADS": "1"}, stderr=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())


def measured(out: Path, family: str) -> dict:
    """Unstructured: the share of zeros in the encoder linears. Structured: pruned heads/neurons and the
    compacted model's CPU speed-up over the gated one (1 thread, this thread's CPU time, median of 5)."""
    import torch

    from plmkit.core.run import load_run
    from plmkit.core.sparsity import masked_layers

    torch.set_num_threads(1)
    model, _, method, _ = load_run(out)
    if family == "unstructured":
        with torch.no_grad():
            zeros = sum(int((layer.mask() == 0).sum()) for _, layer in masked_layers(model))
            total = sum(layer.weight.numel() for _, layer in masked_layers(model))
        return {"measured_sparsity": zeros / total}
    masks = method.engine.masks
    ids = torch.randint(1000, 20000, (32, 64), generator=torch.Generator().manual_seed(0))

    def cpu_time(m: torch.nn.Module) -> float:
        times = []
        with torch.no_grad():
            m(input_ids=ids)
            for _ in range(5):
                start = time.thread_time()
                m(input_ids=ids)
                times.append(time.thread_time() - start)
        return statistics.median(times)

    gated = cpu_time(model)
    heads, neurons = 1 - masks.head_mask.mean().item(), 1 - masks.neuron_mask.mean().item()
    compact = method.export(model)
    return {"pruned_heads": heads, "pruned_neurons": neurons, "gated_cpu_s": gated,
            "compacted_cpu_s": cpu_time(compact), "cpu_speedup": gated / cpu_time(compact),
            "parameters_after": sum(p.numel() for p in compact.parameters())}


def run_one(variant: tuple[str, str, float, list[str]], seed: int, data: list[str], work: Path) -> dict:
    name, family, target, flags = variant
    out = work / f"{name}_{target}_{seed}"
    start = time.time()
    metrics = _train(out, data, seed, [*flags, "--method.teacher", str(work / f"teacher_{seed}")])
    return {"method": name, "family": family, "target": target, "seed": seed,
            "test_accuracy": metrics["test_accuracy"], "wall_s": round(time.time() - start, 1),
            **measured(out, family)}


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    keys = sorted({(r["family"], r["target"], r["method"]) for r in runs})
    for family, target, method in keys:
        group = [r for r in runs if (r["family"], r["target"], r["method"]) == (family, target, method)]
        accs = [r["test_accuracy"] for r in group]
        row = {"family": family, "target": target, "method": method, "n_seeds": len(accs),
               "accuracy_mean": statistics.mean(accs), "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0}
        for key in ("measured_sparsity", "pruned_heads", "pruned_neurons", "cpu_speedup"):
            if key in group[0]:
                row[key] = statistics.mean(r[key] for r in group)
        rows.append(row)
    return rows


def plot(rows: list[dict], teachers: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, family in zip(axes, ("unstructured", "structured"), strict=True):
        for method in sorted({r["method"] for r in rows if r["family"] == family}):
            pts = sorted((r for r in rows if r["family"] == family and r["method"] == method), key=lambda r: r["target"])
            ax.errorbar([r["target"] for r in pts], [r["accuracy_mean"] for r in pts],
                        yerr=[r["accuracy_std"] for r in pts], marker="o", capsize=3, label=method)
        if teachers:
            ax.axhline(statistics.mean(teachers), color="gray", linestyle="--", label="teacher (dense)")
        ax.set_xlabel("sparsity of encoder linears" if family == "unstructured" else "share of heads and neurons pruned")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"MiniLM, rt-polarity: {family}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--train_samples", type=int, default=1024)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--work_dir", default="outputs/cap_reproduction")
    parser.add_argument("--variants", nargs="+", choices=sorted({v[0] for v in VARIANTS}),
                        help="run only these methods (default: all)")
    parser.add_argument("--targets", type=float, nargs="+", help="run only these target sparsities (default: all)")
    args = parser.parse_args()
    work = Path(args.work_dir)
    data = write_data(work / "data", args.train_samples)
    state = json.loads(JSON.read_text()) if JSON.exists() else {"runs": [], "teachers": {}}
    for seed in args.seeds:
        if str(seed) not in state["teachers"]:
            metrics = _train(work / f"teacher_{seed}", data, seed,
                             ["--num_train_epochs", "3", "--learning_rate", "1e-4", "--method", "finetune"])
            state["teachers"][str(seed)] = metrics["test_accuracy"]
            print("teacher", seed, metrics["test_accuracy"], flush=True)
    done = {(r["method"], r["target"], r["seed"]) for r in state["runs"]}
    todo = [(v, seed) for seed in args.seeds for v in VARIANTS
            if (v[0], v[2], seed) not in done and (not args.variants or v[0] in args.variants)
            and (not args.targets or v[2] in args.targets)]

    def save() -> None:
        state["setup"] = " ".join(__doc__.split("\n\n")[1].split())
        state["summary"] = summarise(state["runs"]) if state["runs"] else []
        JSON.write_text(json.dumps(state, indent=1))

    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, variant, seed, data, work) for variant, seed in todo]
        for future in as_completed(futures):
            state["runs"].append(future.result())
            print(json.dumps(state["runs"][-1]), flush=True)
            save()
    save()
    plot(state["summary"], list(state["teachers"].values()))


if __name__ == "__main__":
    main()
