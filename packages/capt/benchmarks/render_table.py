"""Render the CAPT README's results blocks from packages/capt/benchmarks/results/capt_*.json.

Replaces the text between `<!-- capt-results:start -->` and `<!-- capt-results:end -->` in packages/capt/README.md
(the reproduction: continued pre-training, few-shot fine-tuning with paired verdicts, noise invariance; "not run yet"
without capt_reproduction.json) and between `<!-- capt-perf:start -->` and `<!-- capt-perf:end -->` (step cost,
capt_perf.json) and `<!-- capt-vl:start -->` ... (emoji retrieval with and without the CAPT term,
capt_vl_retrieval.json), and draws results/capt_geometry.png (alignment and uniformity of h, from the probe stage). Tables
are generated, never typed.

    .venv/bin/python packages/capt/benchmarks/render_table.py [--check]

The plots need matplotlib (the `bench` extra); `--check` does not draw them.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from readme_block import mean_std, paired_verdict, render_cli, replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "packages" / "capt" / "benchmarks" / "results"
README = ROOT / "packages" / "capt" / "README.md"
REPRO = RESULTS / "capt_reproduction.json"
REPRO_WORDNET = RESULTS / "capt_reproduction_wordnet.json"
PERF = RESULTS / "capt_perf.json"
VL = RESULTS / "capt_vl_retrieval.json"
VL_RANDOM = RESULTS / "capt_vl_retrieval_random_encoder.json"
VL_LONG = RESULTS / "capt_vl_retrieval_900_steps.json"
START, END = "<!-- capt-results:start -->", "<!-- capt-results:end -->"
PERF_START, PERF_END = "<!-- capt-perf:start -->", "<!-- capt-perf:end -->"
VL_START, VL_END = "<!-- capt-vl:start -->", "<!-- capt-vl:end -->"
NAMES = {"minilm": "MiniLM (no continued pre-training)", "mlm": "MLM only", "mlm_time": "MLM only, same CPU time",
         "capt": "MLM + CAPT"}
EXTRA_METRIC = {"trec": ("test_macro_f1", "macro F1"), "sms-spam": ("test_f1", "F1")}
VERDICT_RULE = ("runs paired by seed: mean difference +- its standard error; **supported** only where the mean exceeds "
                "twice its standard error, **contradicted** below minus twice, otherwise within noise")


def head_note(runs: list[dict]) -> str:
    head = next((r for r in runs if r["stage"] == "head"), None)
    if head is None:
        return ""
    return (f"; every variant starts from its masked-LM head trained alone for {head['steps']} steps, MLM loss "
            f"{head['losses']['first']:.2f} -> {head['losses']['last']:.2f}")


def pretrain_table(runs: list[dict]) -> str:
    rows = {r["model"]: r for r in runs if r["stage"] == "pretrain"}
    if not rows:
        return "(the pre-training runs have not finished yet)"
    lines = ["| continued pre-training | steps | val. masked loss | val. masked acc. | last loss/capt | "
             "alignment / uniformity of z | CPU s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for model in ("mlm", "mlm_time", "capt"):
        r = rows.get(model)
        if r is None:
            continue
        capt_losses = [f"{c['loss/capt']:.3f}" for c in r.get("curve", []) if "loss/capt" in c]
        geometry = (f"{r['capt_alignment']:.3f} / {r['capt_uniformity']:.3f}" if "capt_alignment" in r else "-")
        lines.append(f"| {NAMES[model]} | {r['steps']:,} | {r['eval_masked_loss']:.3f} | "
                     f"{100 * r['eval_masked_accuracy']:.2f} | {capt_losses[-1] if capt_losses else '-'} | {geometry} | "
                     f"{r['process_cpu_s']:.0f} |")
    return "\n".join(lines)


def finetune_tables(runs: list[dict], tasks: list[str], regime: str = "k16") -> str:
    cells: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    for r in runs:
        if r["stage"] == "finetune" and r.get("regime", "k16") == regime:
            cell = cells.setdefault((r["task"], r["model"]), {})
            for metric in ("test_accuracy", *(m for m, _ in EXTRA_METRIC.values())):
                if metric in r:
                    cell.setdefault(metric, {})[r["seed"]] = r[metric]
    if not cells:
        return "(no fine-tuning run has finished yet)"
    models = [m for m in NAMES if any((t, m) in cells for t in tasks)]
    lines = ["| task | " + " | ".join(NAMES[m] for m in models) + " |", "|---|" + "---:|" * len(models)]
    for task in tasks:
        row = []
        for model in models:
            cell = cells.get((task, model), {})
            if "test_accuracy" not in cell:
                row.append("-")
                continue
            mean, std = mean_std([100 * v for v in cell["test_accuracy"].values()])
            text = f"{mean:.2f} ± {std:.2f} (n={len(cell['test_accuracy'])})"
            extra = EXTRA_METRIC.get(task)
            if extra and extra[0] in cell:
                e_mean, e_std = mean_std([100 * v for v in cell[extra[0]].values()])
                text += f"; {extra[1]} {e_mean:.2f} ± {e_std:.2f}"
            row.append(text)
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    claims = [("capt", "mlm"), ("capt", "mlm_time"), ("capt", "minilm"), ("mlm", "minilm")]
    lines += ["", f"Verdicts (test accuracy points, A - B, {VERDICT_RULE}):", "",
              "| claim (A - B) | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for a, b in claims:
        out = []
        for task in tasks:
            x, y = cells.get((task, a), {}).get("test_accuracy"), cells.get((task, b), {}).get("test_accuracy")
            out.append(str(paired_verdict(x, y)) if x and y and set(x) & set(y) else "-")
        lines.append(f"| {NAMES[a]} - {NAMES[b]} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def probe_tables(runs: list[dict], plot_file: Path) -> str:
    probes = {r["model"]: r for r in runs if r["stage"] == "probe"}
    if not probes:
        return "(the noise-invariance probe has not run yet)"
    models = [m for m in NAMES if m in probes]
    first = probes[models[0]]
    noises = list(first["cls"])
    lines = ["| pooling | noise | " + " | ".join(NAMES[m] for m in models) + " | MLM + CAPT - MLM only |",
             "|---|---|" + "---:|" * len(models) + "---|"]
    for pooling in ("cls", "mean"):
        for noise in noises:
            values = {m: probes[m][pooling][noise] for m in models}
            verdict = "-"
            if "capt" in values and "mlm" in values:
                v = paired_verdict(dict(enumerate(values["capt"])), dict(enumerate(values["mlm"])))
                verdict = f"{v.mean_difference:+.2f} +- {v.standard_error:.2f} ({v.n} sentences): {v.verdict}"
            lines.append(f"| {pooling} | {noise} | " + " | ".join(f"{statistics.mean(values[m]):.4f}" for m in models)
                         + f" | {verdict} |")
    lines += geometry_table(probes, models, plot_file)
    return (f"Mean cos(h(x), h(x~)) over {first['sentences']} test sentences of the corpus (15% of the tokens "
            "corrupted, at least one; h = [CLS] state or mean of the last hidden states). The row `unrelated` is the "
            "reference cos(h(x), h(y)) of two different sentences: an anisotropic encoder scores every pair near 1, "
            "so a noise's invariance is its gap above that row, not its cosine alone. Verdict column: cosine x 100, "
            "paired by sentence (the same corrupted sentences for every model), the same rule as above.\n\n"
            + "\n".join(lines))


def plot_path(path: Path) -> Path:
    """results/capt_geometry*.png, the plot of a reproduction json (capt_reproduction*.json)."""
    return RESULTS / (path.stem.replace("capt_reproduction", "capt_geometry") + ".png")


def geometry_table(probes: dict[str, dict], models: list[str], plot_file: Path) -> list[str]:
    """Alignment (masking) and uniformity of the l2-normalised h per model and pooling, and the plot's link."""
    if not all("geometry" in probes[m] for m in models):
        return []
    lines = ["", "Alignment (E ||h(x) - h(x~)||^2 under masking) / uniformity (log E exp(-2 ||h(x) - h(y)||^2)) of the "
             "l2-normalised h (Wang & Isola 2020; lower is better for both):", "",
             "| pooling | " + " | ".join(NAMES[m] for m in models) + " |", "|---|" + "---:|" * len(models)]
    for pooling in ("cls", "mean"):
        cells = [probes[m]["geometry"][pooling] for m in models]
        lines.append(f"| {pooling} | " + " | ".join(f"{c['alignment']:.4f} / {c['uniformity']:.3f}" for c in cells)
                     + " |")
    if plot_file.exists():
        lines += ["", f"![alignment and uniformity of h]({plot_file.relative_to(README.parent).as_posix()})"]
    return lines


def plot(path: Path) -> None:
    """`plot_path(path)`: uniformity against alignment of h for each model, one panel per pooling."""
    if not path.exists():
        return
    probes = {r["model"]: r for r in json.loads(path.read_text())["runs"] if r["stage"] == "probe" and "geometry" in r}
    if not probes:
        return
    try:
        import matplotlib
    except ImportError:
        sys.exit("render_table.py draws results/capt_geometry*.png with matplotlib, which is not installed: "
                 "pip install 'plmkit-capt[bench]' (--check needs no plotting)")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, pooling in zip(axes, ("cls", "mean"), strict=True):
        for model in (m for m in NAMES if m in probes):
            g = probes[model]["geometry"][pooling]
            ax.scatter(g["alignment"], g["uniformity"], label=NAMES[model])
        ax.set_xlabel("alignment (masking), lower: more invariant")
        ax.set_ylabel("uniformity, lower: more spread")
        ax.set_title(f"h = {pooling} pooling")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_path(path), dpi=120)
    plt.close(fig)


def render_reproduction(path: Path = REPRO) -> str:
    if not path.exists():
        return ("Not run yet (`packages/capt/benchmarks/reproduce.py` writes "
                "`benchmarks/results/capt_reproduction.json`).")
    data = json.loads(path.read_text())
    s, runs = data["settings"], data["runs"]
    models = s.get("models", ["minilm", "mlm", "capt"])  # jsons written before mlm_time existed
    full_seeds = s.get("full_seeds", [])
    planned = (("head_steps" in s) + (len(models) - 1) + len(models)  # head, pre-training, probe
               + len(models) * len(s["tasks"]) * (len(s["seeds"]) + len(full_seeds)))
    status = "complete" if len(runs) >= planned else (f"INCOMPLETE: {len(runs)} of {planned} jobs (rerun the script "
                                                      f"to finish, it resumes)")
    return "\n".join([
        f"Setup: {s['base_model']} continued on `--data {s.get('data', 'builtin-text')}` for {s['pretrain_steps']:,} "
        f"steps (batch 32, max_length 64, lr 5e-5, {s.get('precision', 'bf16')}, seed 42"
        + (f"; MLM only, same CPU time: {s['mlm_time_steps']:,} steps" if "mlm_time_steps" in s else "")
        + head_note(runs)
        + f"), then fine-tuned with K = 16 per class, {s['finetune_steps']} steps, seeds {s['seeds']}"
        + (f", and with the first {s['full_examples']:,} training examples, 2 epochs, seeds {full_seeds}"
           if full_seeds else "")
        + f". Status: {status}." + copied_note(runs) + pretrained_again_note(runs),
        "", "#### Continued pre-training", "", pretrain_table(runs),
        "", "#### Few-shot fine-tuning (test accuracy %, mean ± std over seeds)", "", finetune_tables(runs, s["tasks"]),
        *(["", f"#### Fine-tuning on {s['full_examples']:,} examples (test accuracy %, mean ± std over seeds)", "",
           finetune_tables(runs, s["tasks"], "n1000")] if full_seeds else []),
        "", "#### Noise invariance of h", "", probe_tables(runs, plot_path(path)),
    ])


def copied_note(runs: list[dict]) -> str:
    sources = sorted({r["from"] for r in runs if "from" in r})
    if not sources:
        return ""
    return (f" The {NAMES['minilm']} fine-tuning runs are those of {', '.join(sources)} (the same settings; copied with "
            "`--base_runs_from`, as the base model never sees the pre-training corpus).")


def pretrained_again_note(runs: list[dict]) -> str:
    """Fine-tuning runs marked `pretrained_again` (a results json of the head and pretrain stages, run again with the
    same recipe after the first run's pre-trained folders were lost) start from those models: say which, and how
    close the second pre-training came to the first."""
    again = [r for r in runs if "pretrained_again" in r]
    if not again:
        return ""
    (source,) = {r["pretrained_again"] for r in again}
    second = json.loads((RESULTS / source).read_text())
    first = {r["model"]: r for r in runs if r["stage"] == "pretrain"}
    pairs = [(r["model"], first[r["model"]]["eval_masked_loss"], r["eval_masked_loss"])
             for r in second["runs"] if r["stage"] == "pretrain"]
    losses = "; ".join(f"{NAMES[m]} {a:.4f} -> {b:.4f}" for m, a, b in pairs)
    gap = max(abs(a - b) for _, a, b in pairs)
    which = sorted({(r["regime"], r["seed"]) for r in again})
    precision = second["settings"]["precision"]
    return (f" {len(again)} fine-tuning runs ({', '.join(f'{g} seed {s}' for g, s in which)}, marked "
            f"`pretrained_again` in the json) start from a second pre-training run with the same settings, seed and "
            f"data ({source}: the first run's pre-trained folders were lost with its machine; the second ran "
            f"{'in bf16 autocast' if precision == 'bf16' else 'in ' + precision} on another CPU). Its validation "
            f"masked loss differs from the first's by at most {gap:.4f} (first -> second: {losses}).")


def render_reproductions() -> str:
    """The run on the builtin texts, then the run on the larger corpus where there is one."""
    blocks = [render_reproduction(REPRO)]
    if REPRO_WORDNET.exists():
        blocks += ["### The same on a larger corpus: the builtin texts and WordNet's definitions",
                   "`reproduce.py --data builtin-text+wordnet-definitions --json "
                   "results/capt_reproduction_wordnet.json --base_runs_from results/capt_reproduction.json`: WordNet "
                   "3.1's 104,545 definition lines (plmkit-knowledge-pretraining's `wordnet-definitions`) after the "
                   "builtin texts, everything else as above.",
                   render_reproduction(REPRO_WORDNET)]
    return "\n\n".join(blocks)


def render_perf(path: Path = PERF) -> str:
    if not path.exists():
        return "Not run yet (`packages/capt/benchmarks/perf.py` writes `benchmarks/results/capt_perf.json`)."
    d = json.loads(path.read_text())
    lines = ["| step | CPU-time ratio to the MLM step (median) | user-time ratio | wall-time ratio | target | met |",
             "|---|---:|---:|---:|---:|---|"]
    for name, label in (("capt", "MLM + CAPT"), ("capt_stop_gradient", "MLM + CAPT, stop_gradient_clean")):
        ratio, target = d["ratio_cpu_median"][name], d["targets"][name]
        lines.append(f"| {label} | {ratio:.3f} | {d['ratio_user_median'][name]:.3f} | "
                     f"{d['ratio_wall_median'][name]:.3f} | <= {target} | {'yes' if ratio <= target else 'no'} |")
    malloc = "glibc's default malloc" if d["malloc"] == "glibc defaults" else f"malloc: `GLIBC_TUNABLES={d['malloc']}`"
    load = f"; load average {d['load_average_1min_at_end']} at the end" if "load_average_1min_at_end" in d else ""
    lines += ["", f"{d['model']}; MLM step {d['mlm_step_cpu_s_median']:.2f} CPU s (median); {d['rounds']} interleaved "
              f"rounds of {d['steps_per_round']} steps per variant; {malloc}; torch {d['torch']}, {d['machine']}{load}. "
              "CPU time is user + system time of the process; wall time on a shared machine is the least reliable."]
    return "\n".join(lines)


VL_ARMS = {"capt": "MLM + matching + CAPT", "capt_0.1": "MLM + matching + 0.1 x CAPT", "no_capt": "MLM + matching"}
VL_METRICS = (("test_itm_single_t2i_r1", "text->image R@1"), ("test_itm_single_i2t_r1", "image->text R@1"),
              ("test_itm_single_t2i_r5", "text->image R@5"),
              ("test_accuracy", "matching accuracy (the same test pairs, captions swapped with p 0.5; chance 50)"))


def _mean_cell(by_seed: dict) -> str:
    if not by_seed:
        return "-"
    mean, std = mean_std([100 * v for v in by_seed.values()])
    return f"{mean:.2f} ± {std:.2f} (n={len(by_seed)})"


def render_vl_blocks() -> str:
    """The runs from the trained tower, a longer budget where run, then the first runs (random image encoder)."""
    blocks = [render_vl(VL)]
    if VL_LONG.exists():
        blocks += ["A longer budget (`--steps 900 --json results/capt_vl_retrieval_900_steps.json`):", render_vl(VL_LONG)]
    return "\n\n".join(blocks + ["The first runs, from a random image encoder (`--tower_steps 0`):", render_vl(VL_RANDOM)])


def tower_r1(encoder: dict, runs: list[dict]) -> str:
    """The tower's own R@1; per seed where runs record towers that differ (`tower_t2i_r1`: a tower trained again
    with the same recipe after the first was lost with its machine)."""
    per_seed = {r["seed"]: r["tower_t2i_r1"] for r in runs if "tower_t2i_r1" in r}
    if len(set(per_seed.values())) < 2:
        return f"{100 * encoder['emb_t2i_r1']:.1f}%"
    seeds: dict[float, list[int]] = {}
    for seed, r1 in sorted(per_seed.items()):
        seeds.setdefault(r1, []).append(seed)
    return (", ".join(f"{100 * r1:.1f}% for seeds {s}" for r1, s in seeds.items())
            + ": one tower per group of seeds, the later trained again with the same recipe and seed on another "
              "machine after the first was lost with its machine; both arms of a seed start from the same tower")


def render_vl(path: Path = VL) -> str:
    if not path.exists():
        return f"Not run yet (`packages/capt/benchmarks/vl_retrieval.py` writes `benchmarks/results/{path.name}`)."
    d = json.loads(path.read_text())
    s, runs = d["settings"], d["runs"]
    arms = [a for a in VL_ARMS if a in s["arms"]]
    by_arm = {arm: {r["seed"]: r for r in runs if r["arm"] == arm} for arm in arms}
    planned = len(s["seeds"]) * len(arms)
    done = sum(1 for arm in arms for seed in s["seeds"] if seed in by_arm[arm])
    status = "complete" if done >= planned else f"INCOMPLETE: {done} of {planned} runs (rerun to finish)"
    encoder = s.get("image_encoder", "random")
    if isinstance(encoder, dict):
        encoder = (f"resnet18 at 64 px from the dual-encoder baseline's tower ({encoder['steps']} InfoNCE steps of "
                   f"batch {encoder['batch_size']}; its own text->image R@1 over the test split "
                   f"{tower_r1(encoder, runs)})")
    else:
        encoder = "random resnet18 at 64 px"
    weights = ", ".join(f"`{arm}` {s['arms'][arm]}" for arm in arms)
    treated = [arm for arm in arms if arm != "no_capt"]
    lines = [f"Setup: SemVLP (MiniLM trunk, {encoder}) trained on {s['data']} for "
             f"{s['steps']} steps of batch 32 with matching + {s['mlm_weight']} x MLM on the corrupted pairs, plus "
             f"capt_weight x the CAPT term ({weights}); seeds {s['seeds']}; retrieval with the "
             f"single-stream matching head among the first {s.get('eval_examples', 'all')} test pairs. Status: {status}.",
             "",
             "| measure (%) | " + " | ".join(VL_ARMS[a] for a in arms) + " | "
             + " | ".join(f"{VL_ARMS[a].split(' + ')[-1]} - none" for a in treated) + " |",
             "|---|" + "---:|" * len(arms) + "---|" * len(treated)]
    for metric, label in VL_METRICS:
        values = {arm: {seed: r[metric] for seed, r in by_arm[arm].items() if metric in r} for arm in arms}
        base = values.get("no_capt", {})
        verdicts = [str(paired_verdict(values[a], base)) if set(values[a]) & set(base) else "-" for a in treated]
        lines.append(f"| {label} | " + " | ".join(_mean_cell(values[a]) for a in arms) + " | "
                     + " | ".join(verdicts) + " |")
    last_itm = {arm: [r["curve"][-1]["loss/task"] for _, r in sorted(rows.items()) if r.get("curve")]
                for arm, rows in by_arm.items()}
    itm = [", ".join(f"{v:.3f}" for v in last_itm[arm]) or "-" for arm in arms]
    lines.append("| last logged matching loss per seed (chance: ln 2 = 0.693) | " + " | ".join(itm) + " |"
                 + " |" * len(treated))
    cpu = [r["process_cpu_s"] for r in runs if "process_cpu_s" in r]
    lines += ["", f"Verdicts: {VERDICT_RULE}. Chance R@1 is 1 / (distinct test images retrieved among)."
              + (f" CPU time per run: {min(cpu):.0f} to {max(cpu):.0f} s." if cpu else "")]
    return "\n".join(lines)


def main() -> None:
    check = "--check" in sys.argv[1:]
    for start, end, body in ((PERF_START, PERF_END, render_perf()), (VL_START, VL_END, render_vl_blocks())):
        if replace_block(README, start, end, body, check=check) and check:
            sys.exit(f"{README} is out of date: run {Path(sys.argv[0]).name}")
    if not check:  # the plots first, so that the blocks link them
        for path in (REPRO, REPRO_WORDNET):
            plot(path)
    render_cli(README, START, END, render_reproductions)


if __name__ == "__main__":
    main()
