"""Render packages/structured_pruning/README.md's results block and the plots from the benchmark json files
(generated, never typed).

    .venv/bin/python packages/structured_pruning/benchmarks/render_table.py
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import multilingual as study  # noqa: E402  (the multilingual study's settings, languages and pairs)
from readme_block import mean_std, paired_verdict, render_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "packages" / "structured_pruning" / "benchmarks" / "results"
README = ROOT / "packages" / "structured_pruning" / "README.md"
BEGIN, END = "<!-- results:begin (packages/structured_pruning/benchmarks/render_table.py) -->", "<!-- results:end -->"


def _mean_std(values: list[float]) -> str:
    mean, std = mean_std([100 * v for v in values])
    return f"{mean:.1f} (n=1)" if len(values) == 1 else f"{mean:.1f} ± {std:.1f} (n={len(values)})"


def reproduction_tables() -> tuple[list[str], dict]:
    runs = []
    for path in sorted(RESULTS.glob("structured_pruning_reproduction_*.json")):
        runs += json.loads(path.read_text())["runs"]
    if not runs:
        return ["(no reproduction results yet)"], {}
    cells: dict = defaultdict(list)
    by_seed: dict = defaultdict(dict)
    cost: dict = defaultdict(list)
    for r in runs:
        cells[(r["task"], r["method"], r["sparsity"])].append(r["test_accuracy"])
        by_seed[(r["task"], r["method"], r["sparsity"])][r["seed"]] = r["test_accuracy"]
        if r["method"] != "dynamic_sparsification" or r["sparsity"] == 0.0:
            cost[(r["task"], r["method"])].append(r["cpu_seconds"])
    budget = runs[0]["budget"]
    lines = [f"Budget: MiniLM, {budget['n_train']} training examples (seeded random sample), {budget['epochs']} "
             f"epochs, batch {budget['batch']}, max_length {budget['max_length']}, bf16, {budget['threads']} "
             f"thread; test accuracy (%) on {budget['n_test']} test examples; seeds as counted (n)."]
    for task in sorted({r["task"] for r in runs}):
        methods = sorted({m for t, m, _ in cells if t == task})
        sparsities = sorted({s for t, _, s in cells if t == task})
        lines += ["", f"**{task}**", "", "| method | " + " | ".join(f"{100 * s:.0f}%" for s in sparsities)
                  + " | train CPU s |", "|---|" + "---|" * (len(sparsities) + 1)]
        for m in methods:
            row = [_mean_std(cells[(task, m, s)]) if (task, m, s) in cells else "" for s in sparsities]
            seconds = cost.get((task, m))
            lines.append(f"| {m} | " + " | ".join(row) + f" | {statistics.mean(seconds):.0f} |" if seconds
                         else f"| {m} | " + " | ".join(row) + " | |")
        single = [statistics.mean(cost[(task, m)]) for m in ("first_order", "movement", "l0") if (task, m) in cost]
        if (task, "dynamic_sparsification") in cost and single:
            ds = statistics.mean(cost[(task, "dynamic_sparsification")])
            line = "\nDynamic Sparsification run / single-sparsity run, process CPU seconds (training and its evaluation): "
            if (task, "first_order") in cost:
                ratio = ds / statistics.mean(cost[(task, "first_order")])
                line += (f"**{ratio:.2f}x** against first_order, the algorithm whose importance orders DS's units "
                         f"(target <= 2.5x: **{'met' if ratio <= 2.5 else 'missed'}**); ")
            lines.append(line + f"{ds / statistics.mean(single):.2f}x against the mean of the three algorithms' runs.")
            lines += ds_gaps(cells, task)
        lines += verdicts(by_seed, task, sparsities, explain=task == min(r["task"] for r in runs))
    return lines, cells


FIRST_ORDER, MOVEMENT, DS = "first_order", "movement", "dynamic_sparsification"


def verdicts(by_seed: dict, task: str, sparsities: list[float], explain: bool) -> list[str]:
    """The claims the paper and this README make, each judged by `paired_verdict` from runs paired by training seed
    (every run of a task uses the same fixed training sample), per sparsity; `explain` adds the legend (first task)."""
    def at(method: str, s: float) -> dict | None:
        return by_seed.get((task, method, s))

    def cell(a: str | None, b: str | None, s: float, named: bool = False) -> str:
        if a is None or b is None or at(a, s) is None or at(b, s) is None:
            return ""
        v = str(paired_verdict(at(a, s), at(b, s)))
        return f"vs {b}: {v}" if named else v

    def best_other(s: float) -> str | None:
        # the other single-sparsity pruning algorithms; DS (one run for every sparsity) has its own row
        others = [m for (t, m, x) in by_seed if t == task and x == s and m not in (FIRST_ORDER, DS)]
        return max(others, key=lambda m: statistics.mean(at(m, s).values()), default=None)

    rows = [
        (f"{FIRST_ORDER} (one-shot, the simplest) - best other algorithm at that sparsity (by mean)",
         lambda s: cell(FIRST_ORDER, best_other(s), s, named=True)),
        (f"{MOVEMENT} - {FIRST_ORDER}", lambda s: cell(MOVEMENT, FIRST_ORDER, s)),
        (f"l0 - {FIRST_ORDER}", lambda s: cell("l0", FIRST_ORDER, s)),
        (f"{FIRST_ORDER}_iterative - {FIRST_ORDER} (one-shot)", lambda s: cell(f"{FIRST_ORDER}_iterative", FIRST_ORDER, s)),
        (f"{FIRST_ORDER}_global - {FIRST_ORDER} (per-layer ranking)", lambda s: cell(f"{FIRST_ORDER}_global", FIRST_ORDER, s)),
        (f"{DS} - separately pruned {FIRST_ORDER}", lambda s: cell(DS, FIRST_ORDER, s)),
    ]
    pruned = [s for s in sparsities if s > 0]
    legend = (" (A - B in test accuracy points, paired by seed: mean difference +- its standard error; **supported** "
              "only where the mean exceeds twice its standard error, **contradicted** below minus twice, otherwise "
              "within noise; the best other algorithm is the highest mean of movement, l0, iterative and global "
              "first-order)" if explain else " (as above)")
    lines = ["", f"Verdicts, {task}{legend}:", "",
             "| claim (A - B) | " + " | ".join(f"{100 * s:.0f}%" for s in pruned) + " |", "|---|" + "---|" * len(pruned)]
    for name, row in rows:
        values = [row(s) for s in pruned]
        if any(values):
            lines.append(f"| {name} | " + " | ".join(values) + " |")
    top = max(pruned, default=None)
    if top is not None and at(MOVEMENT, top) is not None:
        others = sorted(m for (t, m, x) in by_seed if t == task and x == top and m != MOVEMENT)
        lines += ["", f"{MOVEMENT} - each other method at {100 * top:.0f}%: "
                  + "; ".join(f"{m} {paired_verdict(at(MOVEMENT, top), at(m, top))}" for m in others) + "."]
    return lines


def ds_gaps(cells: dict, task: str) -> list[str]:
    """DS minus the separately pruned first-order model (DS ranks units by the same first-order importance),
    in points, at the sparsities both have; the target is within 1.5 points at <= 50%."""
    ds, ref = "dynamic_sparsification", "first_order"
    shared = sorted(s for t, m, s in cells if t == task and m == ds and (task, ref, s) in cells)
    if not shared:
        return []
    gaps = {s: 100 * (statistics.mean(cells[(task, ds, s)]) - statistics.mean(cells[(task, ref, s)])) for s in shared}
    low = [g for s, g in gaps.items() if s <= 0.5]
    verdict = ("met" if all(g >= -1.5 for g in low) else "missed") if low else "not measured"
    return [f"DS - separately pruned {ref}, mean test accuracy points: "
            + ", ".join(f"{100 * s:.0f}%: {g:+.1f}" for s, g in gaps.items())
            + f" (target: within 1.5 points at <= 50%: **{verdict}**)."]


def ds_cost_lines() -> list[str]:
    """The DS training step against a fine-tuning step, gated vs sliced sub-networks (ds_cost.py)."""
    path = RESULTS / "structured_pruning_ds_cost.json"
    if not path.exists():
        return ["Not measured yet: run `benchmarks/ds_cost.py`."]
    d = json.loads(path.read_text())
    t = d["step_cpu_s"]
    return [
        f"{d['model']}, a batch of {d['batch']} x {d['seq_len']} tokens, {d['precision']}, {d['threads']} thread, "
        f"forward + DS's extra sub-networks + backward; {d['machine']}, {d['repeats']} repeats of "
        f"{len(d['middle_sparsities_drawn'])} steps with the same sampled sparsities for both DS variants.",
        "",
        "| step | CPU s per step | vs a fine-tuning step |",
        "|---|---|---|",
        f"| fine-tuning | {t['finetune']:.3f} | 1.00x |",
        f"| DS, sub-networks gated at full width (`--method.slice_subnetworks false`) | {t['ds_gated']:.3f} | "
        f"{d['ds_gated_vs_finetune']:.2f}x |",
        f"| DS, sub-networks sliced to their kept units (default) | {t['ds_sliced']:.3f} | "
        f"{d['ds_sliced_vs_finetune']:.2f}x |",
        "",
        f"Sliced / gated DS step: **{d['sliced_vs_gated']:.2f}x**.",
    ]


def efficiency_table() -> tuple[list[str], dict | None]:
    path = RESULTS / "structured_pruning_efficiency.json"
    if not path.exists():
        return ["(no efficiency results yet)"], None
    data = json.loads(path.read_text())
    lines = [f"{data['model']}, sequence {data['seq_len']}, {data['threads']} thread; {data['machine']}.", "",
             "| sparsity | params (M) | MB on disk | size vs dense | embedding share | FLOP-implied speed-up | "
             "batch 1 speed-up (CPU) | batch 32 speed-up (CPU) | batch 1 / implied | batch 32 / implied |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["minilm"]:
        lines.append(
            f"| {100 * r['sparsity']:.0f}% | {r['parameters'] / 1e6:.2f} | {r['bytes'] / 1e6:.1f} | "
            f"{r['size_ratio']:.2f} | {100 * r['embedding_share']:.0f}% | {r['implied_speedup']:.2f}x | "
            f"{r['batch1_speedup_cpu']:.2f}x | {r['batch32_speedup_cpu']:.2f}x | "
            f"{r['batch1_speedup_vs_implied']:.2f} | {r['batch32_speedup_vs_implied']:.2f} |")
    xlmr = data["xlmr_base"]
    lines += ["", f"{xlmr['model']}: the same measures (bytes counted from the fp32 tensors; "
              f"{xlmr['repeats']['batch1']} / {xlmr['repeats']['batch32']} repeats at batch 1 / 32):", "",
              "| sparsity | params (M) | size vs dense | embedding share | FLOP-implied speed-up | "
              "batch 1 speed-up (CPU) | batch 32 speed-up (CPU) | batch 1 / implied | batch 32 / implied |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in xlmr["rows"]:
        lines.append(f"| {100 * r['sparsity']:.0f}% | {r['parameters'] / 1e6:.1f} | {r['size_ratio']:.2f} | "
                     f"{100 * r['embedding_share']:.0f}% | {r['implied_speedup']:.2f}x | "
                     f"{r['batch1_speedup_cpu']:.2f}x | {r['batch32_speedup_cpu']:.2f}x | "
                     f"{r['batch1_speedup_vs_implied']:.2f} | {r['batch32_speedup_vs_implied']:.2f} |")
    return lines, data


#: the multilingual study's json files (benchmarks/multilingual.py --json), one block each
MULTILINGUAL = "structured_pruning_multilingual*.json"
TEST_BOOKS = {"training": "tested on other verses of the training books",
              "held_out": "tested on the held-out books"}


def _study_runs(data: dict) -> dict[tuple, dict[int, dict]]:
    """(backbone, setting, algorithm, sparsity) -> {seed: scores}; a DS run gives one entry per sparsity."""
    out: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in data["runs"]:
        for sparsity, scores in (r["by_sparsity"].items() if "by_sparsity" in r else [(r["sparsity"], r)]):
            out[(r["backbone"], r["setting"], r["algorithm"], float(sparsity))][r["seed"]] = scores
    return out


def _study_score(scores: dict, measure: str, setting: str) -> float:
    """Accuracy: mean over en/de/fr (over de/fr, the zero-shot languages, for English-trained models); retrieval:
    mean P@1 over de->en and fr->en."""
    if measure == "retrieval":
        return statistics.mean(scores[f"p_at_1_{p.replace('-', '_')}"] for p in study.PAIRS)
    languages = [lang for lang in study.LANGUAGES if lang != "en" or setting not in study.ENGLISH_ONLY]
    return statistics.mean(scores[f"accuracy_{lang}"] for lang in languages)


def multilingual_block() -> list[str]:
    lines = []
    if not (RESULTS / study.JSON.name).exists():
        lines += ["### Multilingual study (results)", "", "The study with its default options has not run yet "
                  "(`benchmarks/multilingual.py` writes `benchmarks/results/structured_pruning_multilingual.json`).", ""]
    for path in sorted(RESULTS.glob(MULTILINGUAL)):
        lines += _study_block(json.loads(path.read_text()), path.name)
    return lines


def _study_block(data: dict, name: str) -> list[str]:
    s, runs = data["settings"], _study_runs(data)
    majority = ", ".join(f"{lang} {100 * v:.1f}%" for lang, v in s["majority"].items())
    lines = [f"### Multilingual study (results): {TEST_BOOKS[s['test_books']]}", "",
             f"`{name}`. Budget: {s['steps']} steps x {s['batch']}, lr {s['lr']}, max length {s['max_length']}, "
             f"{s['precision']}, {s['threads']} thread(s) a run; {s['train_verses']:,} training verses (x3 rows "
             f"in en+de+fr), {s['test_verses']:,} test verses per language (always guessing the most frequent "
             f"group scores {majority}), {s['retrieval_pairs']:,} retrieval pairs of the held-out books. Accuracy: "
             "mean over en, de and fr (`bag_of_tokens`: a linear classifier on the mean one-hot of the tokens, "
             "no encoder), except the English-trained rows (`dense_en`, `zero_shot`): mean over de and "
             "fr, zero-shot. Retrieval: mean P@1 over de->en and fr->en. Mean ± std over seeds (n)."]
    for backbone in sorted({k[0] for k in runs}):
        keys = [k for k in runs if k[0] == backbone]
        sparsities = sorted({k[3] for k in keys if k[1] in (*study.PRUNED, "ds")} - {0.0})
        rows = sorted({k[1:3] for k in keys}, key=lambda r: (study.SETTINGS.index(r[0]), r[1]))
        for measure in ("accuracy", "retrieval"):
            columns = " | ".join(f"{100 * x:.0f}%" for x in (0.0, *sparsities))
            lines += ["", f"**{backbone}**, {measure} (%)", "", f"| setting | algorithm | {columns} |",
                      "|---|---|" + "---|" * (1 + len(sparsities))]
            for setting, algorithm in rows:
                if measure == "retrieval" and setting == "bag_of_tokens":  # no encoder to retrieve with
                    continue
                cells = []
                for x in (0.0, *sparsities):
                    seeds = runs.get((backbone, setting, algorithm, x))
                    cells.append(_mean_std([_study_score(v, measure, setting) for v in seeds.values()]) if seeds else "")
                lines.append(f"| {setting} | {algorithm} | " + " | ".join(cells) + " |")
        lines += _study_findings(runs, backbone, keys, sparsities) + _study_cost(data["runs"], backbone)
    return [*lines, ""]


def _study_findings(runs: dict, backbone: str, keys: list[tuple], sparsities: list[float]) -> list[str]:
    """One row per finding, one column per sparsity, and "all": per seed, the mean over the sparsities at which
    both sides ran (the seeds that ran both sides at all of them)."""
    claims: dict[str, tuple[tuple, tuple]] = {}
    for x in sparsities:
        claims.update({claim: (a, b) for claim, a, b in _study_claims(keys, x)})
    if not claims:
        return []

    def accuracy(side: tuple, x: float) -> dict[int, float]:
        return {seed: _study_score(v, "accuracy", side[0]) for seed, v in runs.get((backbone, *side, x), {}).items()}

    rows = []
    for claim, (a, b) in claims.items():
        va, vb = ({x: accuracy(side, x) for x in sparsities} for side in (a, b))
        both = [x for x in sparsities if va[x].keys() & vb[x].keys()]
        cells = [paired_verdict(va[x], vb[x]) if x in both else "" for x in sparsities]
        seeds = set.intersection(*(set(v[x]) for v in (va, vb) for x in both))
        pooled = [{seed: statistics.mean(v[x][seed] for x in both) for seed in seeds} for v in (va, vb)]
        cells.append(paired_verdict(*pooled) if seeds else "")
        rows.append(f"| {claim} | " + " | ".join(str(c) for c in cells) + " |")
    columns = " | ".join(f"{100 * x:.0f}%" for x in sparsities)
    return ["", f"**{backbone}**, the paper's findings (accuracy as above, A - B in points, paired by seed; all: "
            "each seed's mean over the sparsities both sides ran):", "", f"| finding (A vs B) | {columns} | all |",
            "|---|" + "---|" * (len(sparsities) + 1), *rows]


def _study_cost(recorded: list[dict], backbone: str) -> list[str]:
    """DS's whole-run cost against one separately pruned first-order run (training process CPU seconds)."""
    def cpu(setting: str, algorithm: str) -> list[float]:
        return [r["process_cpu_s"] for r in recorded
                if (r["backbone"], r["setting"], r["algorithm"]) == (backbone, setting, algorithm)]

    ds, one = cpu("ds", "-"), cpu("shared", "first_order")
    if not ds or not one:
        return []
    ds_s, one_s = statistics.mean(ds), statistics.mean(one)
    return ["", f"Cost: one DS run (every sparsity) trains in {ds_s:.0f} CPU s, {ds_s / one_s:.2f}x one separately "
            f"pruned first-order run ({one_s:.0f} s; training only, means over the runs)."]


def _study_claims(keys: list[tuple], x: float) -> list[tuple[str, tuple, tuple]]:
    """(finding, A, B) at sparsity x for the runs present: A, B are (setting, algorithm)."""
    have = {k[1:3] for k in keys if k[3] == x}
    claims = [(f"per-language masks beat one shared mask ({alg})", ("per_language", alg), ("shared", alg))
              for alg in sorted({a for st, a in have if st == "per_language"}) if ("shared", alg) in have]
    claims += [(f"the simplest (one-shot first-order) beats {alg} (shared mask)", ("shared", "first_order"),
                ("shared", alg)) for alg in sorted({a for st, a in have if st == "shared"} - {"first_order"})
               if ("shared", "first_order") in have]
    if ("ds", "-") in have and ("shared", "first_order") in have:
        claims.append(("DS (one run) against separate first-order pruning", ("ds", "-"), ("shared", "first_order")))
    return claims


def plots(cells: dict, efficiency: dict | None) -> None:
    import matplotlib  # the `bench` extra; `--check` needs no plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if cells:
        tasks = sorted({t for t, _, _ in cells})
        fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
        for ax, task in zip(axes[0], tasks, strict=True):
            for method in sorted({m for t, m, _ in cells if t == task}):
                xs = sorted(s for t, m, s in cells if t == task and m == method)
                ys = [100 * statistics.mean(cells[(task, method, s)]) for s in xs]
                ax.plot([100 * x for x in xs], ys, marker="o", label=method)
            ax.set(title=task, xlabel="sparsity (% of heads and FFN neurons)", ylabel="test accuracy (%)")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(RESULTS / "structured_pruning_accuracy.png", dpi=110)
    if efficiency:
        rows = efficiency["minilm"]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for name, series in (("MiniLM", rows), ("XLM-R base", efficiency["xlmr_base"]["rows"])):
            for batch in (1, 32):
                ax.plot([r["size_ratio"] for r in series], [1 / r[f"batch{batch}_speedup_cpu"] for r in series],
                        marker="o", label=f"{name}, batch {batch}")
        ax.plot([r["size_ratio"] for r in rows], [1 / r["implied_speedup"] for r in rows], "k--", label="MiniLM, FLOPs")
        for r in rows:
            ax.annotate(f"{100 * r['sparsity']:.0f}%", (r["size_ratio"], 1 / r["batch32_speedup_cpu"]), fontsize=7)
        ax.set(xlabel="size vs dense (bytes on disk)", ylabel="latency vs dense (CPU time)", xlim=(0, 1.05),
               ylim=(0, 1.05), title="fast is not small")
        ax.plot([0, 1], [0, 1], ":", color="gray")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(RESULTS / "structured_pruning_latency_vs_size.png", dpi=110)
    if (RESULTS / study.JSON.name).exists():
        _study_plot(plt, json.loads((RESULTS / study.JSON.name).read_text()))


def _study_plot(plt: Any, data: dict) -> None:
    """The default study's accuracy vs sparsity, one column per backbone: the settings with first-order pruning
    (top), the algorithms with one shared mask (bottom); dense fine-tuning as a dotted line."""
    runs = _study_runs(data)
    backbones = sorted({k[0] for k in runs if k[1] in study.PRUNED})
    if not backbones:
        return
    fig, axes = plt.subplots(2, len(backbones), figsize=(5 * len(backbones), 7), squeeze=False)
    for column, backbone in enumerate(backbones):
        lines = {0: [(s, "first_order") for s in study.PRUNED] + [("ds", "-")],
                 1: [("shared", a) for a in study.ALGORITHMS] + [("ds", "-")]}
        colors = {line: f"C{i}" for i, line in enumerate(dict.fromkeys(lines[0] + lines[1]))}
        for row, series in lines.items():
            ax = axes[row][column]
            for setting, algorithm in series:
                points = sorted((k[3], v) for k, v in runs.items()
                                if k[:3] == (backbone, setting, algorithm) and k[3] > 0)
                if points:
                    ax.plot([100 * x for x, _ in points],
                            [100 * statistics.mean(_study_score(s, "accuracy", setting) for s in v.values())
                             for _, v in points], marker="o", color=colors[(setting, algorithm)],
                            label=f"{setting}, {algorithm}")
            for setting, style, label in (("dense", ":", "dense"), ("dense_en", "-.", "dense_en (de, fr: zero-shot)"),
                                          ("bag_of_tokens", "--", "bag of tokens (no encoder)")):
                seeds = runs.get((backbone, setting, "-", 0.0))
                if seeds:
                    ax.axhline(100 * statistics.mean(_study_score(s, "accuracy", setting) for s in seeds.values()),
                               linestyle=style, color="gray", label=label)
            ax.axhline(100 * statistics.mean(data["settings"]["majority"].values()), linestyle="--", color="k",
                       linewidth=0.8, label="majority class")
            ax.set(title=f"{backbone}: {'settings (first-order)' if row == 0 else 'algorithms (shared mask)'}",
                   xlabel="sparsity (% of heads and FFN neurons)", ylabel="accuracy (%)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "structured_pruning_multilingual.png", dpi=110)


def main() -> None:
    repro, cells = reproduction_tables()
    eff, efficiency = efficiency_table()
    block = ["### Efficiency", "", *eff, "", "### Dynamic Sparsification step cost", "", *ds_cost_lines(), "",
             "### Accuracy vs sparsity", "", *repro, "", *multilingual_block()]
    render_cli(README, BEGIN, END, lambda: "\n".join(block), lambda: plots(cells, efficiency))


if __name__ == "__main__":
    main()
