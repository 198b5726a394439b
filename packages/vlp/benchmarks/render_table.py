"""Render the plmkit-vlp README's results section from packages/vlp/benchmarks/results/vlp_*.json (never typed by
hand).

    python packages/vlp/benchmarks/render_table.py           # rewrites the block between the vlp-results markers
    python packages/vlp/benchmarks/render_table.py --check   # exit 1 if the README does not match the json files
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from readme_block import mean_std, paired_verdict, render_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "packages" / "vlp" / "README.md"
RESULTS = ROOT / "packages" / "vlp" / "benchmarks" / "results"
START, END = "<!-- vlp-results:start -->", "<!-- vlp-results:end -->"


def perf_table(perf: dict) -> list[str]:
    target = perf["targets"]["image_encoding_ratio"]
    lines = [f"Setup: {perf['setup']}.", "", "| measure | CPU time (median) | wall time (median, noisy) | target |",
             "|---|---|---|---|"]
    for name, r in perf["image_encoding"].items():
        lines.append(f"| image encoding in SemVLP / plain timm forward, {name} ({r['image_tokens']} image tokens) | "
                     f"{r['cpu_ratio_semvlp_over_timm']:.3f}x | {r['wall_ratio_semvlp_over_timm']:.3f}x | "
                     f"<= {target}x |")
    for name, step in perf["step"].items():
        lines.append(f"| two-stream pre-training step / single-stream step, {name} ({step['image_tokens']} image "
                     f"tokens; {step['cpu_s']['single']:.2f} s CPU per single-stream step) | "
                     f"{step['cpu_ratio_two_over_single']:.3f}x | {step['wall_ratio_two_over_single']:.3f}x | reported |")
    return lines


# (column title, metric key): text->image and image->text R@1/R@10 with the matching head in each evaluation mode, and
# with embeddings (the dual encoder's only scorer).
COLUMNS = [("t2i R@1 single", "itm_single_t2i_r1"), ("t2i R@1 two", "itm_two_t2i_r1"),
           ("t2i R@10 single", "itm_single_t2i_r10"), ("t2i R@10 two", "itm_two_t2i_r10"),
           ("i2t R@1 single", "itm_single_i2t_r1"), ("t2i R@1 emb", "emb_t2i_r1"), ("t2i R@10 emb", "emb_t2i_r10")]
ARMS = ("dual_encoder", "single", "two", "alternate")
MEASURES = {"t2i_r1": "text->image R@1", "t2i_r10": "text->image R@10"}


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{100 * mean:.1f} +- {100 * std:.1f}"


def reproduction_table(data: dict) -> list[str]:
    runs = data["runs"]
    lines = ["| encoder | arm | seeds | " + " | ".join(c for c, _ in COLUMNS) + " | matching accuracy (single-stream) | last logged "
             "matching loss | train min (mean) |", "|---|---|---|" + "---|" * len(COLUMNS) + "---|---|---|"]
    for encoder in dict.fromkeys(r["encoder"] for r in runs):
        for arm in ARMS:
            rows = [r for r in runs if r["encoder"] == encoder and r["arm"] == arm]
            if rows:
                minutes = sum(r["train_seconds"] for r in rows) / len(rows) / 60
                cells = [_cell([r[k] for r in rows if k in r]) for _, k in [*COLUMNS, ("", "accuracy")]]
                last = [r["curve"][-1]["loss/task"] for r in rows if r.get("curve")]
                cells.append(f"{sum(last) / len(last):.3f}" if last else "-")
                lines.append(f"| {encoder} | {arm} | {len(rows)} | " + " | ".join(cells) + f" | {minutes:.1f} |")
    return lines


def verdicts(data: dict, measure: str = "t2i_r1") -> list[str]:
    """The paper's ablation claim per encoder: alternating beats single-only (single-stream evaluation) and two-only
    (two-stream evaluation) on text->image R@1 (`measure`); it holds only when both comparisons are "supported"."""
    by: dict[tuple[str, str], dict[int, dict]] = {}
    for r in data["runs"]:
        by.setdefault((r["encoder"], r["arm"]), {})[r["seed"]] = r
    title = MEASURES[measure]
    lines = [f"| encoder | comparison ({title}) | difference (points) | claim holds |", "|---|---|---|---|"]
    for encoder in dict.fromkeys(r["encoder"] for r in data["runs"]):
        alternate = by.get((encoder, "alternate"))
        found = []
        for alone, mode in (("single", "single"), ("two", "two")):
            other = by.get((encoder, alone))
            if not alternate or not other or not set(alternate) & set(other):
                continue
            key = f"itm_{mode}_{measure}"
            verdict = paired_verdict({s: r[key] for s, r in alternate.items()}, {s: r[key] for s, r in other.items()})
            found.append((f"alternate - {alone}-only, {mode}-stream evaluation", verdict))
        if len(found) < 2:
            holds = "incomplete (an arm is missing)"
        elif any(v.n < 2 for _, v in found):
            holds = "no verdict (1 seed)"
        else:
            holds = "yes" if all(v.verdict == "supported" for _, v in found) else "no"
        for i, (text, verdict) in enumerate(found):
            lines.append(f"| {encoder} | {text} | {verdict} | {holds if i == len(found) - 1 else ''} |")
    return lines


def reproduction_block(data: dict) -> list[str]:
    return [f"Setup: {data['setup']}.", "", *reproduction_table(data), "",
            "Verdict rule: the claim holds for an encoder only when both comparisons are \"supported\" (mean paired "
            "difference over seeds above twice its standard error; \"contradicted\" below minus twice).", "",
            *verdicts(data), "", "The same comparisons on text->image R@10 (a secondary measure, less noisy among few "
            "candidates; the verdict above stays the rule):", "", *verdicts(data, "t2i_r10"), ""]


def render(results: Path = RESULTS) -> str:
    """`vlp_reproduction.json` first, then the other encoder families' reproductions (`vlp_reproduction_NAME.json`,
    each with its own setup: an encoder starts from its own tower), then the budget checks
    (`vlp_reproduction_N_steps.json`: the same arms at another budget)."""
    lines: list[str] = []
    repro = results / "vlp_reproduction.json"
    if repro.exists() and json.loads(repro.read_text()).get("runs"):
        data = json.loads(repro.read_text())
        lines += ["Reproduction (`packages/vlp/benchmarks/reproduce.py`), test split, mean +- std over seeds in %:",
                  "", *reproduction_block(data)]
        extras = sorted(results.glob("vlp_reproduction_*.json"))
        for extra in [e for e in extras if not e.stem.endswith("_steps")]:  # another encoder family
            lines += [f"Reproduction (`{extra.name}`), test split, mean +- std over seeds in %:", "",
                      *reproduction_block(json.loads(extra.read_text()))]
        for extra in [e for e in extras if e.stem.endswith("_steps")]:  # budget checks: the same arms, other budgets
            more = json.loads(extra.read_text())
            lines += [f"Budget check (`{extra.name}`): Setup: {more['setup']}.", "", *reproduction_table(more), "",
                      *verdicts(more), "", *verdicts(more, "t2i_r10"), ""]
        if (results / "vlp_retrieval_example.png").exists():
            lines += ["Retrieval example (`reproduce.py --figure`; the run is named in its title): the top-5 of the 300 "
                      "test emoji for four test captions and one free query.", "",
                      "![top-5 test emoji of a few captions](benchmarks/results/vlp_retrieval_example.png)", ""]
    else:
        lines += ["Reproduction (dual encoder vs single-stream, two-stream and alternating SemVLP on the emoji builtin, "
                  "3 seeds): not run yet (`packages/vlp/benchmarks/reproduce.py`; see STATUS.md).", ""]
    perf = results / "vlp_perf.json"
    if perf.exists():
        lines += ["Performance (`packages/vlp/benchmarks/perf.py`):", "", *perf_table(json.loads(perf.read_text()))]
    return "\n".join(lines).strip()


def main() -> None:
    render_cli(README, START, END, render)


if __name__ == "__main__":
    main()
