"""CP-Tuning and UPT-Single with many classes: a sweep of what the papers leave open, on trec (6 classes).

    .venv/bin/python packages/prompt_tuning/benchmarks/sweep_trec.py [--stage coarse] [--parallel 2]
    .venv/bin/python packages/prompt_tuning/benchmarks/sweep_trec.py --stage refine [--around 48,150]
      -> packages/prompt_tuning/benchmarks/results/cp_tuning_sweep_trec.json (resumable: finished runs are skipped)
    .venv/bin/python packages/prompt_tuning/benchmarks/cp_tuning_render_table.py   (README block from the json)

Setting (as packages/prompt_tuning/benchmarks/cp_tuning_reproduce.py): minilm, LM-BFF K = 16 per class
(`--few_shot_k 16 --few_shot_seed S`, training seed S too) with seeds 13, 21, 42, 87, 100, max_length 64, bf16 autocast
where it is fast and fp32 otherwise (`--precision`, recorded per run: runs pair within one precision), the builtin trec
test split (538 questions), the model at the last step, one torch thread per run. Swept: the training
batch size (CP-Tuning's class-balanced sampler fills a batch with G = min(6, batch // 2) classes, batch / G examples
each: 8 -> 4 classes x 2, 24 -> 6 x 4, 48 -> 6 x 8), the number of steps, the learning rate and CP-Tuning's auxiliary
MLM weight; every CP-Tuning run is evaluated both by nearest anchor and by class centroid (no retraining: the saved
model with `config.prediction` switched). Fine-tuning (`finetune`) and UPT-Single (`upt` from minilm, no stage 1,
label words = the label names) run at every (batch, steps, learning rate) as the baselines.

Stages: `coarse` (default): batch {8, 48} x steps {50, 150} x lr {2e-4} x MLM weight {0} (4 configurations per
method, 60 runs); `refine --around BATCH,STEPS` (default: the best coarse CP-Tuning configuration in the json): lr
{1e-4, 2e-4, 4e-4} x MLM weight {0, 0.1} at that batch and step count (the baselines at each lr); `full`: batch
{8, 24, 48} x steps {50, 150} x lr {1e-4, 2e-4} x MLM weight {0, 0.1} (240 runs). `--smoke`: tiny-bert, 8 steps, one
seed, one configuration per method (the test of this script).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools" / "bench"))
from sweep import (  # noqa: E402
    SweepError,
    add_precision_option,
    plmkit_train,
    precision_flags,
    resolve_precision,
    run_sweep,
)

JSON = Path(__file__).parent / "results" / "cp_tuning_sweep_trec.json"
SEEDS = (13, 21, 42, 87, 100)
METHODS = ("cp_tuning", "finetune", "upt")
NUM_CLASSES = 6
# UPT's label words for trec: the label names spelled out (plmkit.prompt_tuning.sources.SOURCES["trec"])
UPT_WORDS = "abbreviation,description,entity,human,location,number"
STAGES = {  # batch sizes, step counts, learning rates, MLM weights
    "coarse": ((8, 48), (50, 150), (2e-4,), (0.0,)),
    "refine": (None, None, (1e-4, 2e-4, 4e-4), (0.0, 0.1)),
    "full": ((8, 24, 48), (50, 150), (1e-4, 2e-4), (0.0, 0.1)),
}


def key(r: dict) -> tuple:
    return r["method"], r["batch"], r["steps"], r["lr"], r["mlm_weight"], r["seed"], r.get("precision", "bf16")


def balanced_layout(batch: int, classes: int = NUM_CLASSES) -> str:
    """'G x n': the classes per batch and examples per class of CP-Tuning's ClassBalancedSampler (remainder spread
    one by one, so n is the smallest count)."""
    groups = min(classes, batch // 2)
    return f"{groups} x {batch // groups}"


def jobs(batches, steps, lrs, mlms, methods, seeds, precision: str = "bf16") -> list[dict]:
    """Seed-major, so an interrupted sweep still covers every configuration with its first seeds."""
    out = []
    for seed in seeds:
        for b in batches:
            for s in steps:
                for lr in lrs:
                    for method in methods:
                        for mlm in mlms if method == "cp_tuning" else (None,):
                            out.append({"method": method, "batch": b, "steps": s, "lr": lr, "mlm_weight": mlm,
                                        "seed": seed, "precision": precision})
    return out


def flags(job: dict, model: str) -> list[str]:
    seed = str(job["seed"])
    argv = ["--model_name_or_path", model, "--data", "trec", "--few_shot_k", "16", "--few_shot_seed", seed,
            "--seed", seed, "--max_length", "64", "--max_steps", str(job["steps"]), "--learning_rate", str(job["lr"]),
            "--per_device_train_batch_size", str(job["batch"]), "--per_device_eval_batch_size", "64",
            "--max_eval_samples", "1000", *precision_flags(job.get("precision", "bf16")), "--report_to", "none",
            "--save_strategy", "no",
            "--disable_tqdm", "true", "--logging_steps", "1000", "--method", job["method"]]
    if job["method"] == "cp_tuning":
        argv += ["--method.mlm_weight", str(job["mlm_weight"]), "--method.prediction", "nearest",
                 "--method.min_per_class", "0"]  # the sweep measures small batches too
    elif job["method"] == "upt":
        argv += ["--method.label_words", UPT_WORDS]
    return argv


def evaluate_centroid(run_dir: str) -> dict[str, float]:
    """Validation and test accuracy of a saved CP-Tuning run predicting by class centroid instead of nearest anchor:
    the same weights and stored anchors, `model.config.prediction` switched (a run folder of the same objective is
    used as saved, so the method option would not reach it); otherwise as `plmkit eval`."""
    from plmkit.core.run import build_run_task, load_run
    from plmkit.core.training import MethodContext, Trainer

    model, processor, method, cfg = load_run(run_dir)
    model.config.prediction = "centroid"
    task = build_run_task(cfg)
    encoded = method.prepare_data(task.encode(task.load(), processor, cfg.model.max_length, method.batch_columns),
                                  MethodContext(cfg.training, task, processor))
    cfg.training.report_to = []
    trainer = Trainer(model, cfg.training, method=method, task=task, model_prepared=True,
                      data_collator=task.collator(processor, model), processing_class=processor,
                      compute_metrics=task.compute_metrics())
    return {f"{prefix}_accuracy_centroid": task.evaluate(trainer, encoded[split], prefix)[f"{prefix}_accuracy"]
            for split, prefix in (("validation", "eval"), ("test", "test"))}


def make_run_one(model: str, work: str | None):
    if work:
        Path(work).mkdir(parents=True, exist_ok=True)

    def run_one(job: dict) -> dict:
        with tempfile.TemporaryDirectory(dir=work, prefix="cp_sweep_") as tmp:
            out = Path(tmp) / "run"
            m = plmkit_train(flags(job, model), out)
            row = {"test_accuracy": m["test_accuracy"], "eval_accuracy": m["eval_accuracy"],
                   "cpu_s": m["process_cpu_s"], "train_runtime_s": round(m["train_runtime"], 1)}
            if job["method"] == "cp_tuning":
                row["layout"] = balanced_layout(job["batch"])
                env = {**os.environ, "PLMKIT_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
                proc = subprocess.run([sys.executable, __file__, "--evaluate_centroid", str(out)], env=env,
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SweepError(f"centroid evaluation of {job} failed:\n{proc.stderr[-2000:]}")
                row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        return row

    return run_one


def best_cp_config(runs: list[dict]) -> tuple[int, int]:
    """(batch, steps) of the CP-Tuning configuration with the highest mean test accuracy over its seeds (nearest
    anchor or centroid, whichever is higher)."""
    by_config: dict[tuple, list[float]] = {}
    for r in runs:
        if r["method"] == "cp_tuning":
            for acc in ("test_accuracy", "test_accuracy_centroid"):
                by_config.setdefault((r["batch"], r["steps"], r["lr"], r["mlm_weight"], acc), []).append(r[acc])
    if not by_config:
        raise SystemExit("no CP-Tuning run in the json yet: run the coarse stage first, or pass --around BATCH,STEPS")
    best = max(by_config, key=lambda c: statistics.mean(by_config[c]))
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=tuple(STAGES), default="coarse")
    parser.add_argument("--around", help="refine: BATCH,STEPS (default: the best coarse CP-Tuning config)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--parallel", type=int, default=1, help="runs at once, one torch thread each")
    add_precision_option(parser)
    parser.add_argument("--work", help="folder for the temporary run folders (default: the system's temp folder)")
    parser.add_argument("--json", type=Path, default=JSON)
    parser.add_argument("--smoke", action="store_true", help="tiny-bert, 8 steps, 1 seed, 1 config per method")
    parser.add_argument("--evaluate_centroid", metavar="RUN_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evaluate_centroid:
        print(json.dumps(evaluate_centroid(args.evaluate_centroid)))
        return
    batches, steps, lrs, mlms = STAGES[args.stage]
    if args.stage == "refine":
        if args.around:
            batches, steps = ((int(v),) for v in args.around.split(","))
        else:
            runs = json.loads(args.json.read_text())["runs"] if args.json.exists() else []
            b, s = best_cp_config(runs)
            batches, steps = (b,), (s,)
            print(f"[sweep] refining around the best CP-Tuning config so far: batch {b}, {s} steps", flush=True)
    model, seeds = "minilm", args.seeds
    if args.smoke:
        model, seeds, batches, steps, lrs, mlms = "tiny-bert", seeds[:1], (8,), (8,), (2e-4,), (0.0,)
    precision = resolve_precision(args.precision)
    settings = {"model": model, "data": "trec", "k": 16, "max_length": 64, "test_examples": 538,
                "threads_per_run": 1, "eval_batch": 64, "selection": "last step (no dev-set checkpoint selection)",
                "upt_label_words": UPT_WORDS, "upt_start": f"{model} (no stage 1, fresh masked-LM head transform)"}
    todo = jobs(batches, steps, lrs, mlms, args.methods, seeds, precision)
    run_sweep(args.json, todo, make_run_one(model, args.work), key, args.parallel, settings=settings)


if __name__ == "__main__":
    main()
