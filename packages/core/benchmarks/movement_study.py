"""Why movement pruning (MvP) collapsed, and what makes it train: MiniLM on the full builtin rt-polarity task at 90%
sparsity, the shipped PST baseline configs (packages/pst/configs/rt_polarity_{movement,magnitude}.yaml: batch 32,
lr 1e-4, max_length 64, bf16, seed 42, cubic schedule t_i 0.1 / t_f 0.3), 1 seed per row, one torch thread per run.

Two parts: a screen of options at a short budget (300 steps), and the HF reference setting (scores start at 0, scores
lr 1e-2) against the fix (scores start at |W|, scores at the model's lr) at the shipped budget (3 epochs = 795 steps)
and a longer one (6 epochs), to test whether the budget explains the collapse (MaP at 6 epochs and the reference at
12 epochs are defined but were not run on this CPU). Writes
packages/core/benchmarks/results/movement_study.json; `--render` writes the core README block from it.

    python packages/core/benchmarks/movement_study.py --work_dir outputs/movement_study   # runs what is missing
    python packages/core/benchmarks/movement_study.py --render [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools" / "bench"))
from readme_block import render_cli  # noqa: E402

RESULTS = Path(__file__).parent / "results"
JSON = RESULTS / "movement_study.json"
README = ROOT / "packages" / "core" / "README.md"
START, END = "<!-- movement-study:start -->", "<!-- movement-study:end -->"
MOVEMENT = "packages/pst/configs/rt_polarity_movement.yaml"
MAGNITUDE = "packages/pst/configs/rt_polarity_magnitude.yaml"
REFERENCE = ["--method.scores_init", "zeros", "--method.scores_learning_rate", "1e-2"]

# name -> (group, steps, config, extra flags, what it tests)
VARIANTS: dict[str, tuple[str, int, str, list[str], str]] = {
    "s300_map": ("screen", 300, MAGNITUDE, [], "MaP (magnitude pruning), the baseline"),
    "s300_faithful": ("screen", 300, MOVEMENT, REFERENCE, "MvP as the HF reference: scores start at 0, lr 1e-2"),
    "s300_fp32": ("screen", 300, MOVEMENT, [*REFERENCE, "--bf16", "false"], "reference, fp32 instead of bf16"),
    "s300_global": ("screen", 300, MOVEMENT, [*REFERENCE, "--method.ranking", "global"],
                    "reference, global ranking over all matrices"),
    "s300_constlr": ("screen", 300, MOVEMENT, [*REFERENCE, "--method.scores_lr_schedule", "constant"],
                     "reference, scores lr without decay"),
    "s300_warm03": ("screen", 300, MOVEMENT, [*REFERENCE, "--method.initial_warmup", "0.3", "--method.final_warmup",
                                              "0.3"], "reference, initial warm-up 0.3 of the steps (90) instead of 0.1"),
    "s300_maginit_1e-2": ("screen", 300, MOVEMENT, ["--method.scores_init", "magnitude",
                                                    "--method.scores_learning_rate", "1e-2"],
                          "scores start at |W|, scores lr 1e-2"),
    "s300_maginit_1e-3": ("screen", 300, MOVEMENT, ["--method.scores_init", "magnitude",
                                                    "--method.scores_learning_rate", "1e-3"],
                          "scores start at |W|, scores lr 1e-3"),
    "s300_maginit_3e-4": ("screen", 300, MOVEMENT, ["--method.scores_init", "magnitude",
                                                    "--method.scores_learning_rate", "3e-4"],
                          "scores start at |W|, scores lr 3e-4"),
    "s300_maginit_1e-4": ("screen", 300, MOVEMENT, ["--method.scores_init", "magnitude",
                                                    "--method.scores_learning_rate", "1e-4"],
                          "scores start at |W|, scores lr 1e-4 = the model's (plmkit's default)"),
    "b795_map": ("budget", 795, MAGNITUDE, [], "MaP"),
    "b795_faithful": ("budget", 795, MOVEMENT, REFERENCE, "MvP, HF reference"),
    "b1590_map": ("budget", 1590, MAGNITUDE, [], "MaP"),
    "b1590_faithful": ("budget", 1590, MOVEMENT, REFERENCE, "MvP, HF reference"),
    "b3180_faithful": ("budget", 3180, MOVEMENT, REFERENCE, "MvP, HF reference"),
    "b795_maginit": ("budget", 795, MOVEMENT, ["--method.scores_init", "magnitude",
                                               "--method.scores_learning_rate", "1e-4"], "MvP, plmkit default"),
    "b795_maginit_3e-4": ("budget", 795, MOVEMENT, ["--method.scores_init", "magnitude",
                                                    "--method.scores_learning_rate", "3e-4"],
                          "MvP, scores start at |W|, scores lr 3e-4"),
}


def run(name: str, work: Path) -> dict:
    group, steps, config, flags, _ = VARIANTS[name]
    out = work / name
    start = time.time()
    argv = [sys.executable, "-m", "plmkit.core.cli", "train", config, "--max_steps", str(steps), *flags,
            "--method.min_steps", "0", "--output_dir", str(out), "--num_threads", "1", "--overwrite_output_dir",
            "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "25"]
    work.mkdir(parents=True, exist_ok=True)
    with out.with_suffix(".log").open("w") as log:
        subprocess.run(argv, check=True, cwd=ROOT, env={**os.environ, "PLMKIT_NUM_THREADS": "1"},
                       stdout=log, stderr=subprocess.STDOUT)
    return collect(name, out, time.time() - start)


def collect(name: str, out: Path, wall_s: float | None = None) -> dict:
    """A finished run folder's numbers: test/validation accuracy and the training-loss curve."""
    metrics = json.loads((out / "metrics.json").read_text())
    state = sorted(out.glob("checkpoint-*/trainer_state.json"))
    history = json.loads(state[-1].read_text())["log_history"] if state else []
    if not history and (out / "trainer_state.json").exists():
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    log = out.with_suffix(".log")  # runs logged every 25 steps to stderr, collected from NAME.log beside the folder
    if not history and log.exists():
        losses = re.findall(r"'loss': '([0-9.]+)'", log.read_text())
        history = [{"step": 25 * (i + 1), "loss": float(v)} for i, v in enumerate(losses)]
    group, steps, _, flags, what = VARIANTS[name]
    return {"name": name, "group": group, "steps": steps, "flags": flags, "what": what,
            "test_accuracy": metrics["test_accuracy"], "eval_accuracy": metrics["eval_accuracy"],
            "train_loss": metrics.get("train_loss"), "wall_s": wall_s, "masks": mask_vs_magnitude(out),
            "loss_curve": [(h["step"], h["loss"]) for h in history if "loss" in h]}


def mask_vs_magnitude(out: Path) -> dict[str, float] | None:
    """How the run's final movement masks relate to the pre-trained weights W0 of MiniLM: the share of the largest
    1% of |W0| (per matrix) they prune, and the share of their kept entries that MaP at W0 would also keep
    (a mask unrelated to magnitude scores 0.10 on both, at 90% sparsity)."""
    import torch
    from safetensors.torch import load_file

    from plmkit.core.models import load_model
    from plmkit.core.sparsity.masks import lowest_k_mask

    state = load_file(str(out / "model.safetensors"))
    if not any(k.endswith(".scores") for k in state):
        return None
    base, _ = load_model("minilm", num_labels=2)
    w0 = dict(base.named_parameters())
    top_total = top_pruned = kept_total = kept_both = 0
    for key, scores in state.items():
        if not key.endswith(".scores"):
            continue
        weight = w0[key.removesuffix(".scores") + ".weight"].detach().abs()
        keep = lowest_k_mask(scores.float(), int(0.9 * scores.numel())) > 0
        keep_map = lowest_k_mask(weight, int(0.9 * weight.numel())) > 0
        top = weight >= torch.kthvalue(weight.flatten(), int(0.99 * weight.numel())).values
        top_total, top_pruned = top_total + int(top.sum()), top_pruned + int((top & ~keep).sum())
        kept_total, kept_both = kept_total + int(keep.sum()), kept_both + int((keep & keep_map).sum())
    return {"largest_1pct_pruned": top_pruned / top_total, "kept_also_kept_by_map": kept_both / kept_total}


def render() -> str:
    data = json.loads(JSON.read_text())
    rows = {r["name"]: r for r in data["runs"]}
    lines = [f"Setup: {' '.join(data['setup'].split())}", ""]
    for group, title in (("screen", "Options at 300 steps (90% sparsity, 1 seed)"),
                         ("budget", "Budget: steps of batch 32 on the full training set (90% sparsity, 1 seed)")):
        lines += [f"**{title}**", "", "| run | steps | test accuracy % | final training loss | largest 1% of W0 pruned "
                  "| kept entries MaP also keeps |", "|---|---|---|---|---|---|"]
        for name, (g, steps, _, _, what) in VARIANTS.items():
            if g != group or name not in rows:
                continue
            r = rows[name]
            loss = r["loss_curve"][-1][1] if r["loss_curve"] else float("nan")
            m = r.get("masks") or {}
            share = (f"{100 * m['largest_1pct_pruned']:.1f}% | {100 * m['kept_also_kept_by_map']:.1f}%" if m
                     else "- | -")
            what = what.replace("|", "\\|")  # |W| inside a table cell
            lines.append(f"| {what} | {steps} | {100 * r['test_accuracy']:.1f} | {loss:.3f} | {share} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="outputs/movement_study")
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="run only these")
    parser.add_argument("--collect", help="take finished runs from this folder (one sub-folder per variant name)")
    parser.add_argument("--render", action="store_true", help="write the core README block from the json")
    args, _ = parser.parse_known_args()
    if args.render:
        render_cli(README, START, END, render)
        return
    data = json.loads(JSON.read_text()) if JSON.exists() else {"runs": []}
    done = {r["name"] for r in data["runs"]}
    for name in args.only or list(VARIANTS):
        if name in done:
            continue
        if args.collect:
            folder = Path(args.collect) / name
            if not (folder / "metrics.json").exists():
                continue
            data["runs"].append(collect(name, folder))
        else:
            data["runs"].append(run(name, Path(args.work_dir)))
        data["setup"] = __doc__.split("\n\n")[1]
        RESULTS.mkdir(parents=True, exist_ok=True)
        JSON.write_text(json.dumps(data, indent=1))
        print(json.dumps({k: v for k, v in data["runs"][-1].items() if k != "loss_curve"}), flush=True)


if __name__ == "__main__":
    main()
