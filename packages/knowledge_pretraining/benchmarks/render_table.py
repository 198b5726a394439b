"""Render the README's results block from packages/knowledge_pretraining/benchmarks/results/reproduction.json.

Replaces the text between `<!-- knowledge-results:start -->` and `<!-- knowledge-results:end -->` in the package
README: the probe before and after continued pre-training per masking policy (mean +- std over seeds, paired
verdicts against random masking), the two findings (K-B vs K-F) before and after, fine-tuning afterwards, and the
budget. `--plot` also draws results/probe_by_relation.png (P@1 per relation and policy). Tables are generated, never
typed.

    .venv/bin/python packages/knowledge_pretraining/benchmarks/render_table.py [--check] [--plot]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools" / "bench"))
from readme_block import mean_std, paired_verdict, render_cli  # noqa: E402

HERE = Path(__file__).resolve().parent
JSON = HERE / "results" / "reproduction.json"
PLOT = HERE / "results" / "probe_by_relation.png"
README = HERE.parent / "README.md"
START, END = "<!-- knowledge-results:start -->", "<!-- knowledge-results:end -->"
POLICIES = ("random", "whole_word", "span", "salient_span", "loss_guided", "attention_guided")
RELATIONS = ("hypernym", "instance-of", "part-of", "member-of")
RULE = ("paired by seed against random masking: mean difference +- its standard error (points); **supported** only "
        "where the mean exceeds twice its standard error, **contradicted** below minus twice, otherwise within noise")


def _runs(data: dict, stage: str) -> list[dict]:
    return [r for r in data["runs"] if r["stage"] == stage]


def _p1(run: dict, split: str) -> float:
    return run["probe"]["by_split"][split]["p_at_1"]


def _cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    mean, std = mean_std([scale * v for v in values])
    return f"{mean:.{digits}f} +- {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def probe_table(data: dict) -> str:
    before = _runs(data, "before")
    runs = _runs(data, "pretrain")
    lines = ["| model | seeds | P@1 injected | P@1 control | P@10 injected | val. masked loss | "
             "injected P@1 vs random | injected P@10 vs random | control P@10 vs random | CPU s |",
             "|---|---:|---:|---:|---:|---:|---|---|---|---:|"]
    if before:
        b = before[0]["probe"]["by_split"]
        lines.append(f"| head-only MiniLM (before) | - | {100 * b['injected']['p_at_1']:.1f} | "
                     f"{100 * b['control']['p_at_1']:.1f} | {100 * b['injected']['p_at_10']:.1f} | - | - | - | - | - |")
    by_policy = {p: {r["seed"]: r for r in runs if r["policy"] == p} for p in POLICIES}
    for policy, seeds in by_policy.items():
        if not seeds:
            continue
        rs = list(seeds.values())
        verdicts = ["-", "-", "-"]
        common = set(seeds) & set(by_policy["random"]) if policy != "random" else set()
        if common:
            for i, (split, metric) in enumerate((("injected", "p_at_1"), ("injected", "p_at_10"),
                                                 ("control", "p_at_10"))):
                def value(run: dict, sp: str = split, m: str = metric) -> float:
                    return run["probe"]["by_split"][sp][m]
                verdicts[i] = str(paired_verdict({s: value(seeds[s]) for s in common},
                                                 {s: value(by_policy["random"][s]) for s in common}))
        lines.append(f"| {policy} | {len(rs)} | {_cell([_p1(r, 'injected') for r in rs])} | "
                     f"{_cell([_p1(r, 'control') for r in rs])} | "
                     f"{_cell([r['probe']['by_split']['injected']['p_at_10'] for r in rs])} | "
                     f"{_cell([r['eval_masked_loss'] for r in rs], 1.0, 3)} | {' | '.join(verdicts)} | "
                     f"{_cell([r['cpu_s'] for r in rs], 1.0, 0)} |")
    baseline = (before[0] if before else (runs[0] if runs else None))
    if baseline is not None:
        majority = baseline["probe"]["by_split"]
        lines.append(f"| majority answer per relation | - | {100 * majority['injected']['baseline_p_at_1']:.1f} | "
                     f"{100 * majority['control']['baseline_p_at_1']:.1f} | - | - | - | - | - | - |")
    return "\n".join(lines)


def cost_line(data: dict) -> str:
    """loss_guided's process CPU time over random masking's, per seed (same steps and data; start-up, scoring pass
    and final evaluation included), and the scoring pass alone."""
    runs = {(r["policy"], r["seed"]): r for r in _runs(data, "pretrain")}
    seeds = sorted(s for p, s in runs if p == "loss_guided" and ("random", s) in runs)
    if not seeds:
        return ""
    ratios = sorted(runs[("loss_guided", s)]["cpu_s"] / runs[("random", s)]["cpu_s"] for s in seeds)
    method = runs[("loss_guided", seeds[0])].get("method", {})
    passes = [runs[("loss_guided", s)].get("method", {}).get("masking_rescoring_seconds") for s in seeds]
    passes = [x for x in passes if x is not None]
    views = method.get("masking_score_views", 4)  # runs recorded before the option was reported used 4
    text = (f"Cost: a loss_guided run took {ratios[len(ratios) // 2]:.2f}x the process CPU time of a random-masking "
            f"run (median over {len(seeds)} seeds; per seed {', '.join(f'{x:.2f}' for x in ratios)})")
    if passes:
        text += (f", of which the one scoring pass at train begin took {passes[0]:.0f} s of wall time ({views} views "
                 "of every training line)")
    return text + "."


def relation_table(data: dict) -> str:
    runs = _runs(data, "pretrain")
    before = _runs(data, "before")
    lines = ["| model | " + " | ".join(RELATIONS) + " |", "|---|" + "---:|" * len(RELATIONS)]
    rows = ([("head-only (before)", before)] if before else []) + [(p, [r for r in runs if r["policy"] == p])
                                                                   for p in POLICIES]
    for name, rs in rows:
        if not rs:
            continue
        cells = []
        for relation in RELATIONS:
            key = f"injected/{relation}"
            values = [r["probe"]["by_split_relation"][key]["p_at_1"] for r in rs
                      if key in r["probe"]["by_split_relation"]]
            cells.append(_cell(values))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings_table(data: dict) -> str:
    rows = [("head-only MiniLM (before)", _runs(data, "before"))]
    rows += [(p, [r for r in _runs(data, "pretrain") if r["policy"] == p]) for p in POLICIES]
    lines = ["| model | cloze error K-B | cloze error K-F | K-B - K-F error | attention K-B | attention K-F | "
             "K-B - K-F attention |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, rs in rows:
        if not rs:
            continue
        f = [r["findings"] for r in rs]
        lines.append(
            f"| {name} | {_cell([x['cloze']['kb']['error_rate'] for x in f])} | "
            f"{_cell([x['cloze']['kf']['error_rate'] for x in f])} | "
            f"{_cell([x['cloze']['difference']['mean'] for x in f])} | "
            f"{_cell([x['attention']['kb']['mean'] for x in f], 1.0, 3)} | "
            f"{_cell([x['attention']['kf']['mean'] for x in f], 1.0, 3)} | "
            f"{_cell([x['attention']['difference']['mean'] for x in f], 1.0, 3)} |")
    return "\n".join(lines)


def finetune_table(data: dict) -> str:
    runs = _runs(data, "finetune")
    if not runs:
        return "(no fine-tuning run has finished yet)"
    tasks = sorted({r["task"] for r in runs})
    models = [m for m in ("head", *POLICIES) if any(r["policy"] == m for r in runs)]
    lines = ["| starting model | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for model in models:
        cells = []
        for task in tasks:
            r = next((x for x in runs if x["policy"] == model and x["task"] == task), None)
            cells.append(f"{100 * r['test_accuracy']:.1f}" if r else "-")
        lines.append(f"| {'head-only MiniLM' if model == 'head' else model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render() -> str:
    if not JSON.exists():
        return "Not run yet: `benchmarks/reproduce.py` writes `results/reproduction.json`."
    data = json.loads(JSON.read_text())
    s = data["settings"]
    head = next(iter(_runs(data, "head")), None)
    facts = next(iter(_runs(data, "data")), None)
    parts = []
    budget = (f"Budget: {s['base']} with its masked-LM head trained alone first ({s['head_steps']} steps, batch "
              f"{s.get('head_batch', s['batch'])}, lr 1e-3, on the whole definitions corpus")
    if head and head.get("losses"):
        budget += f"; MLM loss {head['losses']['first']:.2f} -> {head['losses']['last']:.2f}"
    budget += (f"), then {s['steps']} steps of continued pre-training per policy and seed (batch {s['batch']}, lr "
               f"{s['lr']}, {s['max_length']} tokens, CPU, fp32)")
    if facts:
        budget += (f" on {facts['train_lines']:,} definitions lines: the {facts['stating_lines']:,} lines that state "
                   f"the {facts['facts']['injected']:,} probed injected facts and as many other lines; the probe: "
                   f"{facts['facts']['injected']:,} injected and {facts['facts']['control']:,} control facts with a "
                   f"single-token answer")
    parts.append(budget + ". " + ("Smoke run (tiny-bert): numbers are meaningless." if s.get("smoke") else ""))
    parts.append("**Probe** (P@1 / P@10 in %, mean +- std over seeds; " + RULE + "):\n\n" + probe_table(data))
    parts.append(cost_line(data))
    parts.append("**P@1 on injected facts per relation** (%):\n\n" + relation_table(data))
    parts.append(f"**The two findings** on {s['analysis_lines']} WordNet validation lines (cloze error rates in %, "
                 "every third word masked at a time; attention received: 1 = uniform; differences are per-sentence "
                 "means, K-B minus K-F):\n\n" + findings_table(data))
    parts.append("**Fine-tuning afterwards** (test accuracy %, 1,024 training examples, 2 epochs, seed 1; from each "
                 "policy's seed-1 model):\n\n" + finetune_table(data))
    return "\n\n".join(parts)


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(JSON.read_text())
    runs = _runs(data, "pretrain")
    policies = [p for p in POLICIES if any(r["policy"] == p for r in runs)]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(1, len(policies))
    for i, policy in enumerate(policies):
        rs = [r for r in runs if r["policy"] == policy]
        means = []
        for relation in RELATIONS:
            key = f"injected/{relation}"
            vals = [r["probe"]["by_split_relation"][key]["p_at_1"] for r in rs if key in r["probe"]["by_split_relation"]]
            means.append(100 * sum(vals) / len(vals) if vals else 0.0)
        ax.bar([j + i * width for j in range(len(RELATIONS))], means, width, label=policy)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(RELATIONS))], RELATIONS)
    ax.set_ylabel("P@1 on injected facts (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)


if __name__ == "__main__":
    render_cli(README, START, END, render, plot if "--plot" in sys.argv[1:] else None)
