"""SemVLP's ablation at small scale: does alternating single- and two-stream pre-training beat each mode alone?

Arms, each with the same budget (steps x batch, AdamW with linear decay and 10% warm-up, timm's evaluation transform,
captions cut at 32 tokens) and the same initial timm encoder for every seed (random, `--image_encoder_from` a
trained tower, or `--tower_steps N`: that tower trained first, `plmkit.vlp.dual_encoder.train_tower`):
- `dual_encoder`: the contrastive baseline (`plmkit.vlp.dual_encoder`: the timm encoder trained into frozen MiniLM's
  sentence space with InfoNCE), retrieval by cosine;
- `single`, `two`, `alternate`: SemVLP pre-trained with `plmkit train --task image_text --method semvlp
  --method.mode_schedule ARM` from `plmkit vlp init` (MiniLM's trunk, the timm encoder), all objectives on (term
  weights: `--method_option`); retrieval with the matching head over the test split (or its first `--eval_examples`
  emoji: the head scores N x N pairs), in both modes (`--task.eval_modes single,two`).

Data: the emoji builtin (1,447 train / 150 validation / 300 test emoji; `plmkit vlp prepare-data emoji` first).
Encoders: resnet18 (resnet-style) and vit_tiny_patch16_224 at 64 px (ViT-style, a 4 x 4 patch grid).

Verdict rule (README, rendered by render_table.py): the paper's claim holds for an encoder when alternating beats
single-only in single-stream evaluation AND two-only in two-stream evaluation on text->image R@1, each "supported"
by `paired_verdict` (mean paired difference over seeds above twice its standard error).

    python packages/vlp/benchmarks/reproduce.py [--seeds 1 2 3] [--max_steps 1500] [--encoders resnet18 ...]
        [--parallel 2] [--eval_examples 100] [--image_encoder_from tower.safetensors | --tower_steps 1500]
        [--method_option KEY=VALUE ...]
    python packages/vlp/benchmarks/reproduce.py --smoke --output /tmp/smoke.json   # the mechanics on tiny data

Results are appended run by run to `--output` (default packages/vlp/benchmarks/results/vlp_reproduction.json; a
finished run is not repeated), so an interrupted reproduction continues where it stopped. render_table.py reads
`vlp_reproduction.json`, another encoder family's `vlp_reproduction_NAME.json` (each family from its own tower) and
budget checks `vlp_reproduction_N_steps.json`. `--figure` also writes results/vlp_retrieval_example.png: the top-5
test emoji (of all 300) of a few captions for the last alternating run. The commands behind the README's tables are
in its "Budget of the reproduction".
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from sweep import (  # noqa: E402
    add_precision_option,
    logged_curve,
    plmkit_train,
    precision_flags,
    resolve_precision,
    run_sweep,
    write_json,
)

from plmkit.vlp.commands import build_model, rank_images  # noqa: E402
from plmkit.vlp.data import load_builtin_pairs, read_pairs  # noqa: E402
from plmkit.vlp.dual_encoder import train_dual_encoder, train_tower  # noqa: E402

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "vlp_reproduction.json"
FIGURE = RESULTS / "vlp_retrieval_example.png"
ARMS = ("dual_encoder", "single", "two", "alternate")
ENCODERS = {"resnet18": 64, "vit_tiny_patch16_224": 64}
SMOKE_ENCODERS = {"test_resnet": 64, "test_vit": 32}
# four captions of test emoji (each has its true image among the 300) and one free query
QUERIES = ["thinking face", "purple heart", "italy flag: it, flag it", "trophy", "dog face"]


def init_folder(encoder: str, size: int, seed: int, args: argparse.Namespace, work: Path) -> Path:
    """The SemVLP model every arm of (encoder, seed) starts from, built once (before the parallel jobs, so two jobs
    never write one folder at once)."""
    folder = work / f"init-{encoder}-{seed}"
    if not folder.exists():
        model, processor = build_model(args.text, encoder, size, seed, args.image_encoder_from, **args.model_options)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return folder


def tower_note(weights: Path, result: dict) -> str:
    """Where the tower's metrics file (`tower-N.json` beside `tower-N.safetensors`, as the capt V+L benchmark writes
    it) exists, record it in `result["tower"]` and describe it for the setup line."""
    meta = weights.with_suffix(".json")
    if not meta.exists():
        return ""
    tower = result["tower"] = json.loads(meta.read_text())
    return (f": {tower['steps']} steps x batch {tower['batch_size']}, lr {tower['learning_rate']}, seed {tower['seed']}; "
            f"its own text->image R@1 {100 * tower['emb_t2i_r1']:.1f}% among all 300 test emoji")


def semvlp_flags(arm: str, seed: int, folder: Path, args: argparse.Namespace, data: list[str]) -> list[str]:
    eval_limit = ["--max_eval_samples", str(args.eval_examples)] if args.eval_examples else []
    return ["--model_name_or_path", str(folder), *data, *eval_limit, "--task", "image_text",
            "--task.eval_modes", "single,two", "--method", "semvlp", "--method.mode_schedule", arm,
            "--method.image_encoder_learning_rate", str(args.image_lr), *args.method_flags,
            "--max_steps", str(args.max_steps), "--per_device_train_batch_size", str(args.batch_size),
            "--per_device_eval_batch_size", "64", "--learning_rate", str(args.lr), "--warmup_steps", "0.1",
            "--weight_decay", "0.01", "--max_length", "32", "--seed", str(seed), "--save_strategy", "no",
            "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", str(max(1, args.max_steps // 10)),
            *precision_flags(args.precision)]


def semvlp_run(job: dict, args: argparse.Namespace, data: list[str], work: Path) -> dict[str, Any]:
    folder = init_folder(job["encoder"], args.encoders[job["encoder"]], job["seed"], args, work)  # built before the jobs
    out = work / f"{job['arm']}-{job['encoder']}-{job['seed']}"
    shutil.rmtree(out, ignore_errors=True)  # what a failed attempt left (finished runs are not run again)
    start = time.perf_counter()
    metrics = plmkit_train(semvlp_flags(job["arm"], job["seed"], folder, args, data), out, threads=args.threads)
    curve = logged_curve(out, ("loss/task", "loss/mlm", "loss/visual_regression", "loss/visual_codebook"), digits=4)
    kept = {k[len("test_"):]: v for k, v in metrics.items() if k.startswith("test_") and ("_r" in k or k in
                                                                                           ("test_loss", "test_accuracy"))}
    return {**kept, "train_seconds": round(time.perf_counter() - start, 1), "cpu_s": metrics["process_cpu_s"],
            "precision": args.precision, "curve": curve, "run_dir": str(out)}


def dual_run(job: dict, args: argparse.Namespace, splits: dict[str, list]) -> dict[str, Any]:
    test = splits["test"][:args.eval_examples] if args.eval_examples else splits["test"]
    # this thread's CPU time: with --parallel the process runs other jobs' threads too (torch at one thread computes
    # on the calling thread; with more, its pool's time is not counted)
    clock = time.thread_time if args.threads == 1 else time.process_time
    cpu = clock()
    metrics = train_dual_encoder(splits["train"], test, job["encoder"], args.encoders[job["encoder"]], args.max_steps,
                                 args.batch_size, args.dual_lr, job["seed"], text_model=args.text, max_length=32,
                                 num_threads=args.threads)
    return {**metrics, "cpu_s": round(clock() - cpu, 1), "precision": "fp32"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--encoders", nargs="+", default=None, help=f"timm names (default {list(ENCODERS)})")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--max_steps", type=int, default=1500)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4, help="SemVLP trunk and heads")
    parser.add_argument("--image_lr", type=float, default=1e-3, help="SemVLP's timm encoder")
    parser.add_argument("--dual_lr", type=float, default=1e-3, help="the dual encoder's image tower")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--eval_examples", type=int, default=0,
                        help="retrieval among the first N test emoji (0: the whole split; the matching head scores "
                             "N x N pairs in each mode, so the whole 300-emoji split costs more CPU than training)")
    add_precision_option(parser)
    parser.add_argument("--work_dir", default=None, help="run folders (default: a temporary folder, deleted)")
    parser.add_argument("--output", default=str(OUT))
    parser.add_argument("--figure", action="store_true", help=f"write {FIGURE.name} from the last alternating run")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes data, tiny-bert, timm test models")
    parser.add_argument("--image_encoder_from", default=None, metavar="FILE",
                        help="start every SemVLP arm's timm encoder from these weights (a trained dual-encoder tower, "
                             "train_tower) instead of random; one encoder only")
    parser.add_argument("--tower_steps", type=int, default=0, metavar="N",
                        help="train that tower first (the dual encoder, N steps x 32, lr 1e-3, seed 1) into "
                             "WORK_DIR/tower-ENCODER/ (a rerun with the same --work_dir reuses it) and start from it; "
                             "one encoder only")
    parser.add_argument("--method_option", nargs="*", default=[], metavar="KEY=VALUE",
                        help="semvlp options for the SemVLP arms, e.g. mlm_weight=0.05 (STATUS.md: term weights)")
    args = parser.parse_args()
    if args.eval_examples < 0:
        raise SystemExit(f"--eval_examples must be >= 0, got {args.eval_examples}")
    if args.tower_steps < 0:
        raise SystemExit(f"--tower_steps must be >= 0, got {args.tower_steps}")
    if args.tower_steps and args.image_encoder_from:
        raise SystemExit("give --tower_steps (train a tower) or --image_encoder_from (a trained one), not both")
    encoders = args.encoders or list(SMOKE_ENCODERS if args.smoke else ENCODERS)
    if (args.image_encoder_from or args.tower_steps) and len(encoders) != 1:
        raise SystemExit(f"a tower holds one encoder's weights; pass --encoders with one name, got {encoders}")
    torch.set_num_threads(args.threads)
    args.precision = resolve_precision(args.precision)
    args.method_flags = []
    for pair in args.method_option:
        key, _, value = pair.partition("=")
        if not value:
            raise SystemExit(f"--method_option expects KEY=VALUE, got {pair!r}")
        args.method_flags += [f"--method.{key}", value]
    args.model_options = {}
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="vlp-repro-"))
    if args.smoke:
        from plmkit.vlp.testing import data_flags, write_image_text

        paths = write_image_text(work / "data")
        data = data_flags(paths)
        splits = {s: read_pairs(p, split=s) for s, p in paths.items()}
        args.text = "tiny-bert"
        args.model_options = {"codebook_size": 8, "cross_attention_layers": 1}
        args.method_flags += ["--method.codebook_samples", "64", "--method.kmeans_iterations", "3"]
        args.encoders = {e: SMOKE_ENCODERS[e] for e in (args.encoders or SMOKE_ENCODERS)}
    else:
        data = ["--data", "emoji"]
        splits = load_builtin_pairs("emoji")
        args.text = "minilm"
        args.encoders = {e: ENCODERS.get(e, 64) for e in (args.encoders or ENCODERS)}
    if args.tower_steps:
        encoder = next(iter(args.encoders))
        smoke = {"batch_size": 4, "text_model": "tiny-bert"} if args.smoke else {}
        weights, _ = train_tower(work / f"tower-{encoder}", splits, encoder, args.encoders[encoder], args.tower_steps,
                                 num_threads=args.threads, **smoke)
        args.image_encoder_from = str(weights)
    output = Path(args.output)
    result = json.loads(output.read_text()) if output.exists() else {"runs": []}
    encoder_from = (f"SemVLP's timm encoder from {Path(args.image_encoder_from).name} (a trained dual-encoder tower"
                    f"{tower_note(Path(args.image_encoder_from), result)})"
                    if args.image_encoder_from else "SemVLP's timm encoder from random init")
    result["setup"] = (f"{'smoke: shapes data, tiny-bert' if args.smoke else 'emoji builtin, MiniLM trunk'}, "
                       f"{args.max_steps} steps x batch {args.batch_size}, SemVLP lr {args.lr} (timm encoder "
                       f"{args.image_lr}), {encoder_from}, {args.precision} autocast; dual encoder from random init, "
                       f"lr {args.dual_lr}, fp32; {args.threads} thread(s) a run; retrieval among "
                       + (f"the first {args.eval_examples} test emoji" if args.eval_examples else "every test emoji")
                       + (f"; semvlp options {' '.join(args.method_option)}" if args.method_option else ""))
    write_json(output, result)
    jobs = [{"arm": arm, "encoder": encoder, "seed": seed}  # seed-major: an interrupted run leaves paired seeds
            for seed in args.seeds for encoder in args.encoders for arm in args.arms]
    for job in jobs:
        if job["arm"] != "dual_encoder":
            init_folder(job["encoder"], args.encoders[job["encoder"]], job["seed"], args, work)

    def run_one(job: dict) -> dict[str, Any]:
        print(f"[reproduce] {job['arm']} {job['encoder']} seed {job['seed']}", flush=True)
        metrics = dual_run(job, args, splits) if job["arm"] == "dual_encoder" else semvlp_run(job, args, data, work)
        return {"steps": args.max_steps, "batch_size": args.batch_size, **metrics}

    try:
        result = run_sweep(output, jobs, run_one, key=lambda r: (r["arm"], r["encoder"], r["seed"]),
                           parallel=args.parallel)
        alternates = [r["run_dir"] for r in result["runs"] if r["arm"] == "alternate" and Path(r["run_dir"]).exists()]
        if args.figure and alternates:
            figure(alternates[-1], QUERIES if not args.smoke else ["a red square", "a blue dot"],
                   f"{Path(alternates[-1]).name}, {args.max_steps} steps:",
                   FIGURE if not args.smoke else output.with_suffix(".png"))
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def figure(run_dir: str, queries: list[str], title: str, target: Path) -> None:
    """One row per query: the query, then its top-5 test images with their matching log-odds; `title` names the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from plmkit.vlp.images import load_rgb

    found = rank_images(run_dir, queries, "test", "single", top=5)
    fig, axes = plt.subplots(len(queries), 6, figsize=(9, 1.6 * len(queries)), squeeze=False)
    for row, (query, images) in enumerate(zip(queries, found, strict=True)):
        axes[row][0].text(0.0, 0.5, query, fontsize=9, va="center", wrap=True)
        axes[row][0].axis("off")
        for col, hit in enumerate(images, 1):
            axes[row][col].imshow(load_rgb(hit["image"]))
            axes[row][col].set_title(f"{hit['score']:.2f}", fontsize=7)
            axes[row][col].axis("off")
    fig.suptitle(f"{title} top-5 test images by the single-stream matching head (log-odds above each)", fontsize=9)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
