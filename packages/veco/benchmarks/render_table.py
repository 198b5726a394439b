"""Render the VECO README's results block from packages/veco/benchmarks/results/veco_*.json (never typed by hand):
the reproduction (BLEU, retrieval P@1, zero-shot book-group accuracy per arm, with paired verdicts on the paper's
claims, one block per budget that has run; "not run yet" without one), its plot, the step-cost measurement and the generate speed against fairseq.

    python packages/veco/benchmarks/render_table.py [--check]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from readme_block import mean_std, paired_verdict, render_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "packages" / "veco" / "README.md"
RESULTS = ROOT / "packages" / "veco" / "benchmarks" / "results"
PERF, PLOT = RESULTS / "veco_perf.json", RESULTS / "veco_reproduction.png"
#: the reproduction's budgets (reproduce.py --scale), each rendered when its json holds runs, each followed by its
#: budget checks (`--pretrain_steps N`: veco_reproduction_<scale>_pretrain<N>.json); the plot shows the first budget
REPROS = [(RESULTS / "veco_reproduction.json", "Reproduction at the full budget (`--scale full`, sized for a GPU)"),
          (RESULTS / "veco_reproduction_cpu.json", "Reproduction at the CPU budget (`--scale cpu`)")]
GENERATE = RESULTS / "veco_generate_perf.json"
PROBE = RESULTS / "veco_translation_probe.json"
START, END = "<!-- veco-results:start -->", "<!-- veco-results:end -->"
ARMS = {"random": "(a) random init", "mlm": "(b) MLM-only pre-training", "veco": "(c) VECO CA-MLM"}
#: (column, stage, metric, scale to points)
COLUMNS = [
    ("de->en BLEU", "nlg", "test_bleu", 1.0),
    ("P@1 de->en", "retrieval", "p_at_1_de_en", 100.0),
    ("P@1 fr->en", "retrieval", "p_at_1_fr_en", 100.0),
    ("book group en", "classify", "accuracy_en", 100.0),
    ("book group de (zero-shot)", "classify", "accuracy_de", 100.0),
    ("book group fr (zero-shot)", "classify", "accuracy_fr", 100.0),
]
#: the paper's claims, as "A beats B" on one column
CLAIMS = [
    ("veco", "random", "de->en BLEU", "VECO init beats random init in translation (paper: +2.3 BLEU, WMT14, large)"),
    ("veco", "mlm", "de->en BLEU", "CA-MLM beats MLM-only pre-training in translation (paper's ablation: +2.1 BLEU "
                                   "over XLM with bilingual data, IWSLT14 De-En)"),
    ("veco", "mlm", "P@1 de->en", "CA-MLM aligns languages better than MLM-only (paper: Tatoeba 75.1 vs XLM-R 57.3)"),
    ("veco", "mlm", "P@1 fr->en", "the same, fr->en"),
    ("veco", "mlm", "book group de (zero-shot)", "CA-MLM transfers better zero-shot (paper: XNLI +3.2 over XLM with "
                                                 "bilingual data)"),
    ("veco", "mlm", "book group fr (zero-shot)", "the same, French"),
]


def _values(data: dict) -> dict[tuple[str, str], dict[int, float]]:
    """(arm, column) -> {seed: value in points}."""
    out: dict[tuple[str, str], dict[int, float]] = {}
    for column, stage, metric, scale in COLUMNS:
        for r in data["runs"]:
            if r["stage"] == stage and metric in r:
                out.setdefault((r["arm"], column), {})[r["seed"]] = scale * r[metric]
    return out


def reproduction(data: dict, title: str, base: dict | None = None) -> list[str]:
    """One budget's block; `base` is the json of the budget that a budget check changes."""
    values = _values(data)
    s = data["settings"]
    p, m, c, shape = s["pretrain"], s["mt"], s["cls"], s["shape"]
    setup = "as above; only the pre-training steps differ." if base else " ".join(s["setup"].split())
    lines = [
        f"**{title}.** Setup: {setup}",
        "",
        f"Model: {shape['num_hidden_layers']} layers, d={shape['hidden_size']}, {shape['num_attention_heads']} heads, "
        f"FFN {shape['intermediate_size']}, vocabulary {s['vocab_size']:,}; {s.get('precision', 'fp32')}. "
        f"Budget: pre-training {p['steps']:,} steps of {p['batch']} pairs (max length {p['max_length']}, lr "
        f"{p['lr']}) per arm; translation {m['steps']:,} steps of {m['batch']} pairs, BLEU of beam-{m['beams']} "
        f"outputs on {m['eval_samples']:,} held-out verses; retrieval on {s['retrieval']:,} held-out verse pairs; "
        f"book groups: {c['train']:,} English training verses, {c['steps']:,} steps, {c['eval_samples']:,} test verses "
        "per language.",
        "",
        "| arm | seeds | " + " | ".join(col for col, *_ in COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for arm, label in ARMS.items():
        if base and not any(values.get((arm, column)) for column, *_ in COLUMNS):
            continue  # an arm a budget check leaves out
        cells, seeds = [], set()
        for column, *_ in COLUMNS:
            runs = values.get((arm, column), {})
            seeds |= set(runs)
            if runs:
                mean, std = mean_std(list(runs.values()))
                cells.append(f"{mean:.2f} ± {std:.2f}")
            else:
                cells.append("-")
        lines.append(f"| {label} | {len(seeds)} | " + " | ".join(cells) + " |")
    majority = (f" Always guessing the most frequent book group scores {100 * s['majority']:.1f}% of the test verses."
                if "majority" in s else "")
    lines += ["", f"BLEU in sacreBLEU points, P@1 and accuracy in %, mean ± std over seeds.{majority}",
              *_pretraining(data), *(_against(data, base) if base else []), *_cost(data), "",
              "Verdicts (A - B in points, runs paired by seed: mean difference +- its standard error; **supported** "
              "only where the mean exceeds twice its standard error, **contradicted** below minus twice, otherwise "
              "within noise):", "", "| claim | A - B | verdict |", "|---|---|---|"]
    for a, b, column, claim in CLAIMS:
        va, vb = values.get((a, column)), values.get((b, column))
        ran = bool(va and vb and set(va) & set(vb))
        if base and not ran:
            continue  # a claim on an arm the budget check leaves out
        cell = str(paired_verdict(va, vb, scale=1.0)) if ran else "not run"
        lines.append(f"| {claim} | {ARMS[a].split(' ', 1)[1]} - {ARMS[b].split(' ', 1)[1]}, {column} | {cell} |")
    return [*lines, ""]


def _accuracy(runs: list[dict], term: str) -> float:
    """Held-out masked-token accuracy of one stream (`mlm`: H, `ca_mlm`: S), mean over runs of the x and y sides, %."""
    return statistics.mean(50 * (r[f"eval_{term}_x_accuracy"] + r[f"eval_{term}_y_accuracy"]) for r in runs)


def _pretrain_runs(data: dict, arm: str, seeds: set[int] | None = None) -> list[dict]:
    return [r for r in data["runs"]
            if r["stage"] == "pretrain" and r["arm"] == arm and (seeds is None or r["seed"] in seeds)]


def _streams(runs: list[dict]) -> dict[str, float]:
    """Stream name -> its masked-token accuracy (the S-stream only where the arm trains it)."""
    out = {"H-stream": _accuracy(runs, "mlm")}
    if "eval_ca_mlm_x_accuracy" in runs[0]:
        out["S-stream"] = _accuracy(runs, "ca_mlm")
    return out


def _pretraining(data: dict) -> list[str]:
    """What pre-training reached: held-out masked-token accuracy of each stream, mean over seeds."""
    def text(runs: list[dict]) -> str:
        return ", ".join(f"{name}{' (CA-MLM, the paired sentence visible)' if name == 'S-stream' else ''} {acc:.1f}%"
                         for name, acc in _streams(runs).items())

    parts = [f"{ARMS[arm].split(' ', 1)[1]}: {text(runs)}"
             for arm in ("mlm", "veco") if (runs := _pretrain_runs(data, arm))]
    return ["", "Pre-training, masked-token accuracy on held-out pairs: " + "; ".join(parts) + "."] if parts else []


def _against(data: dict, base: dict) -> list[str]:
    """A budget check against the budget it changes, on the seeds both ran: each pre-trained arm's BLEU and
    masked-token accuracy there and here."""
    new, old, parts, compared = _values(data), _values(base), [], set()
    for arm in ("mlm", "veco"):
        a, b = new.get((arm, "de->en BLEU"), {}), old.get((arm, "de->en BLEU"), {})
        seeds = set(a) & set(b)
        runs_a, runs_b = _pretrain_runs(data, arm, seeds), _pretrain_runs(base, arm, seeds)
        if seeds and runs_a and runs_b:
            compared |= seeds
            there, here = _streams(runs_b), _streams(runs_a)
            parts.append(f"{ARMS[arm].split(' ', 1)[1]}: BLEU {statistics.mean(b[s] for s in seeds):.2f} -> "
                         f"{statistics.mean(a[s] for s in seeds):.2f}, " +
                         ", ".join(f"{name} {there[name]:.1f}% -> {here[name]:.1f}%" for name in here))
    if not parts:
        return []
    return ["", f"Against the same seed(s) ({', '.join(map(str, sorted(compared)))}) at {base['settings']['pretrain']['steps']:,} "
                f"pre-training steps, there -> here: " + "; ".join(parts) + "."]


def _cost(data: dict) -> list[str]:
    """Measured process CPU time of the runs that record it (pre-training per arm, translation), mean over runs."""
    parts = []
    for stage, arm, label in (("pretrain", "mlm", "MLM-only pre-training"), ("pretrain", "veco", "VECO pre-training"),
                              ("nlg", None, "translation fine-tuning with its beam search")):
        cpu = [r["process_cpu_s"] for r in data["runs"] if r["stage"] == stage and arm in (None, r["arm"])]
        if cpu:
            parts.append(f"{label} {statistics.mean(cpu) / 60:.0f} min")
    return ["", "CPU time per run (process time, mean over runs): " + "; ".join(parts) + "."] if parts else []


def _reproductions() -> list[tuple[dict, str, dict | None]]:
    """(json content, title, the changed budget's json content or None) of every budget and budget check whose json
    holds runs."""
    found = []
    for path, title in REPROS:
        base = json.loads(path.read_text()) if path.exists() else None
        if base and base.get("runs"):
            found.append((base, title, None))
        checks = [json.loads(check.read_text()) for check in RESULTS.glob(f"{path.stem}_pretrain*.json")]
        for data in sorted((c for c in checks if c.get("runs")), key=lambda c: c["settings"]["pretrain"]["steps"]):
            steps = data["settings"]["pretrain"]["steps"]
            found.append((data, f"Budget check: {title[0].lower()}{title[1:]} with {steps:,} pre-training steps "
                                f"(`--pretrain_steps {steps}`)", base))
    return found


def translation_probe(p: dict) -> list[str]:
    """Does the S-stream read the translation: its accuracy with each pair's own translation and with another's."""
    models = p["models"]
    pairs = sorted({m["pairs"] for m in models.values()})
    lines = [f"Does the S-stream read the translation? (`benchmarks/translation_probe.py`: "
             f"{' / '.join(f'{n:,}' for n in pairs)} held-out translation pairs, masked once; the S-stream's "
             "masked-token accuracy with each pair's own translation as its memory and with another verse's, the same "
             "masked tokens; own - other: pooled difference +- its standard error over pairs; accuracies in %)", "",
             "| VECO pre-training | steps | side | masked tokens | H-stream | S-stream, own translation | "
             "S-stream, another verse's | own - other |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for name, m in models.items():
        for side in ("x", "y"):
            r = m[side]
            diff, se = r["true_minus_other"]
            lines.append(f"| {name} | {m['pretraining_steps'] or '-'} | {side} | {r['masked_tokens']:,} | "
                         f"{r['h_stream']:.2f} | {r['s_stream_true']:.2f} | {r['s_stream_other']:.2f} | "
                         f"{diff:+.2f} +- {se:.2f} |")
    return [*lines, ""]


def perf(p: dict) -> list[str]:
    return [f"Step cost ({p['setup']}):", "",
            "| measure | CA-MLM step / MLM step | target |", "|---|---|---|",
            f"| process CPU time | {p['ratio_cpu']:.2f}x | <= {p['target_ratio']}x |",
            f"| wall time (load average {p['load_average']:.1f} during the run) | {p['ratio_wall']:.2f}x | |", ""]


def generate_perf(p: dict) -> list[str]:
    return [f"Generate speed against fairseq ({p['setup']}; same best hypothesis for {p['same_best_hypothesis']} "
            "sources):", "",
            "| ours (`generate`) | fairseq (`SequenceGenerator`) | ours / fairseq | target |", "|---|---|---|---|",
            f"| {p['ours_tokens_per_s']:.0f} tokens/s | {p['fairseq_tokens_per_s']:.0f} tokens/s | {p['ratio']:.2f}x "
            f"| >= {p['target_ratio']}x |", ""]


def render() -> str:
    lines: list[str] = []
    repros = _reproductions()
    for data, title, base in repros:
        lines += reproduction(data, title, base)
    if repros:
        lines += [f"![BLEU and P@1 per arm](benchmarks/results/{PLOT.name}) (plot: {repros[0][1][0].lower()}"
                  f"{repros[0][1][1:]})", ""]
    else:
        lines += ["Reproduction: not run yet (`packages/veco/benchmarks/reproduce.py` writes "
                  "`benchmarks/results/veco_reproduction.json`; the lead runs it).", ""]
    if PROBE.exists():
        lines += translation_probe(json.loads(PROBE.read_text()))
    if PERF.exists():
        lines += perf(json.loads(PERF.read_text()))
    if GENERATE.exists():
        lines += generate_perf(json.loads(GENERATE.read_text()))
    return "\n".join(lines).rstrip()


def plot() -> None:
    repros = _reproductions()
    if not repros:
        return
    data, title, _ = repros[0]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = _values(data)
    shown = ["de->en BLEU", "P@1 de->en", "P@1 fr->en"]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.2))
    for ax, column in zip(axes, shown, strict=True):
        arms = [a for a in ARMS if values.get((a, column))]
        stats = [mean_std(list(values[(a, column)].values())) for a in arms]
        ax.bar(range(len(arms)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=4,
               color=["#999999", "#6699cc", "#cc6633"][: len(arms)])
        ax.set_xticks(range(len(arms)), [a for a in arms])
        ax.set_title(column)
    fig.suptitle(f"Small VECO on the Bible, held-out books (mean ± std over seeds); {title.split(' (')[0].lower()}")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)


def main() -> None:
    render_cli(README, START, END, render, plot)


if __name__ == "__main__":
    main()
