"""Render the prompt-tuning README's CP-Tuning blocks (never typed by hand): the reproduction from
packages/prompt_tuning/benchmarks/results/cp_tuning_reproduce.json (between the cp-tuning-results markers) and the
trec sweep from results/cp_tuning_sweep_trec.json (between the cp-sweep markers; "not run yet" without the json).

    python packages/prompt_tuning/benchmarks/cp_tuning_render_table.py [--check]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from readme_block import mean_std, paired_verdict, render_cli, replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "packages" / "prompt_tuning" / "README.md"
RESULTS = ROOT / "packages" / "prompt_tuning" / "benchmarks" / "results" / "cp_tuning_reproduce.json"
START, END = "<!-- cp-tuning-results:start -->", "<!-- cp-tuning-results:end -->"
SWEEP = RESULTS.parent / "cp_tuning_sweep_trec.json"
SWEEP_START, SWEEP_END = "<!-- cp-sweep:start -->", "<!-- cp-sweep:end -->"

ROWS = [
    ("finetune", "fine-tuning ([CLS] head)"),
    ("prompt_tuning", "prompt tuning with a verbalizer"),
    ("cp_tuning", "CP-Tuning, nearest anchor"),
    ("cp_tuning_centroid", "CP-Tuning, class centroid"),
    ("cp_tuning_mlm", "CP-Tuning + aux. MLM (lambda 0.1), nearest anchor"),
    ("cp_tuning_mlm_centroid", "CP-Tuning + aux. MLM (lambda 0.1), class centroid"),
    ("cp_tuning_adapted_head", "CP-Tuning from the adapted masked-LM head, nearest anchor"),
    ("cp_tuning_adapted_head_centroid", "CP-Tuning from the adapted masked-LM head, class centroid"),
]

NAMES = dict(ROWS)
DEFAULT = "cp_tuning"  # the official code's settings: nearest anchor, no auxiliary MLM, the checkpoint's head
BASELINES = ("finetune", "prompt_tuning")
# this README's own comparisons between CP-Tuning variants: (A, B) for "A beats B"
OWN = [("cp_tuning_centroid", "cp_tuning"), ("cp_tuning_mlm_centroid", "cp_tuning_mlm"),
       ("cp_tuning_adapted_head_centroid", "cp_tuning_adapted_head"), ("cp_tuning_mlm", "cp_tuning"),
       ("cp_tuning_mlm_centroid", "cp_tuning_centroid"), ("cp_tuning_adapted_head", "cp_tuning"),
       ("cp_tuning_adapted_head_centroid", "cp_tuning_centroid")]


def verdict_tables(data: dict, targets: list[str]) -> list[str]:
    """The paper's claim (every CP-Tuning variant beats fine-tuning and prompt tuning with a verbalizer) and this
    README's comparisons, each judged per target by `paired_verdict` over runs paired by seed (the seed is also the
    K-shot sampling seed, so paired runs saw the same training examples)."""
    by_seed: dict[tuple[str, str], dict[int, float]] = {}
    for r in data["runs"]:
        by_seed.setdefault((r["target"], r["variant"]), {})[r["seed"]] = r["test_accuracy"]

    def row(label: str, a: str, b: str) -> str | None:
        cells = [str(paired_verdict(by_seed[(t, a)], by_seed[(t, b)]))
                 if (t, a) in by_seed and (t, b) in by_seed else "-" for t in targets]
        return None if all(c == "-" for c in cells) else f"| {label} | " + " | ".join(cells) + " |"

    def name(key: str) -> str:
        return NAMES[key] + (" (reference)" if key == DEFAULT else "")

    header = "| " + " | ".join(targets) + " |"
    rule = "|---|" + "---|" * len(targets)
    paper = [row(f"{name(key)} - {NAMES[base]}", key, base)
             for key, _ in ROWS if key not in BASELINES for base in BASELINES]
    own = [row(f"{name(a)} - {name(b)}", a, b) for a, b in OWN]
    return [
        "Verdicts (A - B in test accuracy points, runs paired by seed, which is also the K-shot sampling seed: mean "
        "difference +- its standard error; **supported** only where the mean exceeds twice its standard error, "
        "**contradicted** below minus twice, otherwise within noise):",
        "",
        "| the paper's claim: CP-Tuning - baseline " + header, rule, *(r for r in paper if r),
        "",
        "| this README's comparisons (A - B) " + header, rule, *(r for r in own if r),
    ]


def render() -> str:
    data = json.loads(RESULTS.read_text())
    s = data["settings"]
    targets = list(data["summary"])
    lines = [
        f"Setup: {s['model']}, K = {s['k']} per class (LM-BFF sampler), seeds {s['seeds']}, {s['max_steps']} steps of "
        f"batch {s['batch_size']} (class-balanced for CP-Tuning), learning rate {s['learning_rate']}, max_length "
        f"{s['max_length']}, bf16, at most {s['test_examples_max']} test examples, model at the {s['selection']}. "
        "Test accuracy in %, mean +- std over the seeds (n = runs finished).",
        "",
        "| method | " + " | ".join(targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for key, name in ROWS:
        cells = []
        for t in targets:
            r = data["summary"][t].get(key)
            cells.append("-" if r is None else f"{100 * r['mean']:.1f} +- {100 * r['std']:.1f} (n={r['n']})")
        if any(c != "-" for c in cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", *verdict_tables(data, targets)]
    wall = sum(r["wall_s"] for r in data["runs"] if not r["variant"].endswith("_centroid"))
    lines += ["", f"Total training + evaluation wall time: {wall / 60:.0f} min (shared 2-core machine, 1 thread).", "",
              "![CP-Tuning feature space](benchmarks/results/cp_tuning_features.png)", ""]
    return "\n".join(lines)


# the sweep's variants: (method, prediction) -> name, and the run fields holding its test / dev accuracy
SWEEP_VARIANTS = {
    ("finetune", None): ("fine-tuning", "test_accuracy", "eval_accuracy"),
    ("cp_tuning", "nearest"): ("CP-Tuning, nearest anchor", "test_accuracy", "eval_accuracy"),
    ("cp_tuning", "centroid"): ("CP-Tuning, class centroid", "test_accuracy_centroid", "eval_accuracy_centroid"),
    ("upt", None): ("UPT-Single", "test_accuracy", "eval_accuracy"),
}


def _sweep_cells(runs: list[dict]) -> dict[tuple, dict[str, dict[int, float]]]:
    """(variant, batch, steps, lr, mlm_weight, precision) -> {"test"/"dev"/"cpu": {seed: value}} (runs recorded before
    the precision was: bf16)."""
    cells: dict[tuple, dict[str, dict[int, float]]] = {}
    for r in runs:
        for (method, prediction), (_, test, dev) in SWEEP_VARIANTS.items():
            if r["method"] == method:
                config = ((method, prediction), r["batch"], r["steps"], r["lr"], r["mlm_weight"],
                          r.get("precision", "bf16"))
                cell = cells.setdefault(config, {"test": {}, "dev": {}, "cpu": {}})
                cell["test"][r["seed"]], cell["dev"][r["seed"]], cell["cpu"][r["seed"]] = r[test], r[dev], r["cpu_s"]
    return cells


def _pct(values: dict[int, float]) -> str:
    mean, std = mean_std(list(values.values()))
    return f"{100 * mean:.1f} +- {100 * std:.1f}"


def _lr(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")  # 2e-4


def _config(c: tuple) -> str:
    (method, _), batch, steps, lr, mlm, precision = c
    layout = f" ({min(6, batch // 2)} x {batch // min(6, batch // 2)})" if method == "cp_tuning" else ""
    return (f"batch {batch}{layout}, {steps} steps, lr {_lr(lr)}" + ("" if mlm is None else f", MLM {mlm:g}")
            + ("" if precision == "bf16" else f", {precision}"))


def render_sweep(path: Path = SWEEP) -> str:
    """The trec sweep: mean +- std per configuration, each CP-Tuning / UPT-Single configuration against fine-tuning
    at the same batch, steps and learning rate (`paired_verdict`, runs paired by seed = K-shot sampling seed), and
    the best configuration of each against the best fine-tuning configuration."""
    if not path.exists():
        return ("Not run yet (`packages/prompt_tuning/benchmarks/sweep_trec.py` writes "
                "`benchmarks/results/cp_tuning_sweep_trec.json`).")
    data = json.loads(path.read_text())
    s = data["settings"]
    cells = _sweep_cells(data["runs"])
    order = {v: i for i, v in enumerate(SWEEP_VARIANTS)}
    ordered = sorted(cells, key=lambda c: (c[5], c[1], c[2], c[3], order[c[0]], c[4] if c[4] is not None else -1))
    precisions = sorted({c[5] for c in cells})

    def baseline(c: tuple) -> tuple:
        return ("finetune", None), c[1], c[2], c[3], None, c[5]

    lines = [
        f"Setup: {s['model']} on trec (6 classes), K = {s['k']} per class (LM-BFF sampler), seeds "
        f"{sorted({r['seed'] for r in data['runs']})}, max_length "
        f"{s['max_length']}, "
        + ("bf16" if precisions == ["bf16"] else "bf16 autocast unless a configuration says fp32 (runs pair within one "
           "precision)")
        + f", the {s['test_examples']}-question test split, model at the {s['selection']}, "
        f"one thread per run; UPT-Single starts from {s['upt_start']}. Test and dev (the K-shot dev set) accuracy "
        "in %, mean +- std over the seeds (n = seeds finished); CPU s: CPU seconds of one training process (start-up, "
        "training, evaluation), mean. CP-Tuning's batch is G classes x n examples each (its class-balanced sampler).",
        "",
        "| method | configuration | n | test acc. | dev acc. | CPU s | A - fine-tuning at the same batch, steps, lr |",
        "|---|---|---|---|---|---|---|",
    ]
    tally: dict[str, dict[str, int]] = {}
    for c in ordered:
        cell, base = cells[c], cells.get(baseline(c))
        verdict = ""
        if c[0][0] != "finetune" and base is not None and set(cell["test"]) & set(base["test"]):
            v = paired_verdict(cell["test"], base["test"])
            verdict = str(v)
            tally.setdefault(SWEEP_VARIANTS[c[0]][0], {}).setdefault(v.verdict, 0)
            tally[SWEEP_VARIANTS[c[0]][0]][v.verdict] += 1
        lines.append(f"| {SWEEP_VARIANTS[c[0]][0]} | {_config(c)} | {len(cell['test'])} | {_pct(cell['test'])} | "
                     f"{_pct(cell['dev'])} | {statistics.mean(cell['cpu'].values()):.0f} | {verdict} |")

    nearest, centroid = ("cp_tuning", "nearest"), ("cp_tuning", "centroid")
    pairs = [(c, (centroid, *c[1:])) for c in ordered if c[0] == nearest and (centroid, *c[1:]) in cells]
    if pairs:
        lines.append("- CP-Tuning, class centroid - nearest anchor (the same trained models): " + "; ".join(
            f"{_config(n)}: {paired_verdict(cells[m]['test'], cells[n]['test'])}" for n, m in pairs) + ".")

    def best(method: str, split: str, precision: str) -> tuple | None:  # CP-Tuning: over both predictions
        mine = [c for c in cells if c[0][0] == method and c[5] == precision]
        return max(mine, key=lambda c: statistics.mean(cells[c][split].values())) if mine else None

    lines += ["", "Verdicts: A - B in test accuracy points, runs paired by seed (also the K-shot sampling seed): mean "
              "difference +- its standard error; **supported** only where the mean exceeds twice its standard error, "
              "**contradicted** below minus twice, otherwise within noise.", ""]
    for name, counts in tally.items():
        lines.append(f"- {name} vs fine-tuning at the same batch, steps and lr: " + ", ".join(
            f"{counts[k]} {k}" for k in ("supported", "within noise", "contradicted", "no verdict") if counts.get(k))
            + f" (of {sum(counts.values())} configurations).")
    selections = (("test", "highest mean test accuracy (optimistic for both sides, more so for the side with more "
                           "configurations)"), ("dev", "highest mean dev accuracy"))
    for precision, (split, how) in [(p, sel) for p in precisions for sel in selections]:
        ft = best("finetune", split, precision)
        for method in ("cp_tuning", "upt"):
            top = best(method, split, precision)
            if top is None or ft is None or not set(cells[top]["test"]) & set(cells[ft]["test"]):
                continue
            lines.append(f"- best {SWEEP_VARIANTS[top[0]][0]} ({_config(top)}: {_pct(cells[top]['test'])}) - best "
                         f"fine-tuning ({_config(ft)}: {_pct(cells[ft]['test'])}), each selected by {how}: "
                         f"{paired_verdict(cells[top]['test'], cells[ft]['test'])}.")
    return "\n".join(lines)


def main() -> None:
    check = "--check" in sys.argv[1:]
    if replace_block(README, SWEEP_START, SWEEP_END, render_sweep(), check=check) and check:
        sys.exit(f"{README} is out of date: run {Path(sys.argv[0]).name}")
    render_cli(README, START, END, render)


if __name__ == "__main__":
    main()
