"""Render the prompt-tuning README's results section from
packages/prompt_tuning/benchmarks/results/cp_tuning_reproduce.json (never typed by hand).

    python packages/prompt_tuning/benchmarks/cp_tuning_render_table.py   # rewrites the block between the cp-tuning-results markers
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from readme_block import paired_verdict, render_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "packages" / "prompt_tuning" / "README.md"
RESULTS = ROOT / "packages" / "prompt_tuning" / "benchmarks" / "results" / "cp_tuning_reproduce.json"
START, END = "<!-- cp-tuning-results:start -->", "<!-- cp-tuning-results:end -->"

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
        return NAMES[key] + (" (default)" if key == DEFAULT else "")

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


def main() -> None:
    render_cli(README, START, END, render)


if __name__ == "__main__":
    main()
