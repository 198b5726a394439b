"""CAPT reproduction on CPU: continued pre-training of MiniLM, MLM-only vs MLM + CAPT, then few-shot fine-tuning and
the noise invariance of the representations.

    PLMKIT_NUM_THREADS=1 .venv/bin/python packages/capt/benchmarks/reproduce.py [--parallel 2] [--work DIR]
      -> packages/capt/benchmarks/results/capt_reproduction.json (resumable: finished jobs are skipped)
    .venv/bin/python packages/capt/benchmarks/render_table.py        (README block from the json)
    .venv/bin/python packages/capt/benchmarks/reproduce.py --smoke   (tiny-bert, a few steps: checks that it runs)
    ... reproduce.py --data builtin-text+wordnet-definitions --json .../capt_reproduction_wordnet.json \
        --base_runs_from .../capt_reproduction.json   (the larger corpus; MiniLM's own fine-tuning runs copied)

Stages (one json, tools/bench/sweep.py; rerun to resume, keep --work: the later stages read the pre-trained folders):
0. `head`: all-MiniLM-L6-v2 ships no masked-LM head (its transform layer loads fresh, its decoder tied to the
   embeddings), so its MLM loss starts near 9. Only the head (everything outside the base encoder; the encoder and
   the tied decoder frozen: the core's `--method head_only`) is trained with the MLM loss on the corpus for
   `--head_steps` steps (default 300, batch 32, lr 1e-3, the settings of plmkit-upt's `adapt-head`), saved to
   WORK/minilm_head; every pre-training variant starts from it. Fine-tuning and the probe read only the encoder, which
   this stage leaves as it is.
1. `pretrain`: MiniLM with that head (`minilm`) continues pre-training on `--data` (default `builtin-text`: every
   builtin dataset's training texts, their test texts not in it; `builtin-text+wordnet-definitions` adds WordNet 3.1's
   definitions from plmkit-knowledge-pretraining) with task masked_lm, 15% BERT masking, max_length 64, batch 32,
   `--steps` steps (default 1,000: 1.4 epochs of builtin-text's 707 batches), lr 5e-5, 6% warm-up, weight decay
   0.01, seed 42, bf16 autocast where it is fast, else fp32 (`--precision`, recorded in the json): `mlm` (method finetune: the MLM
   loss only) and `capt` (method capt, every option at its default), the same steps, data order and learning rates;
   and `mlm_time`, MLM only for as many more steps as a CAPT step costs (the CPU-time ratio of results/capt_perf.json,
   1.89: 1,888 steps), the comparison at equal compute. CPU time stands in for the wall-clock time of the plan: on
   this shared machine wall time swings several-fold with the load. The capt run is exported (projection head
   dropped).
2. `probe`: cos(h(x), h(x~)) per noise type (masking, shuffling, substitution, 15% of the tokens, see
   plmkit.capt.analysis) and the reference cos(h(x), h(y)) of two different sentences (`unrelated`), on the first 512
   sentences of the corpus's test split (texts neither model trained on), h the [CLS] state and the mean of the last
   hidden states, for `minilm` (before), `mlm`, `mlm_time` and `capt` (after); and the alignment (masking noise) and
   uniformity of the l2-normalised h (Wang & Isola 2020), which render_table.py plots.
3. `finetune`: each of `minilm`, `mlm`, `mlm_time`, `capt` fine-tuned (method finetune) on rt-polarity, trec and
   sms-spam, max_length 64, the same precision, in two regimes: `k16`, LM-BFF's K = 16 examples per class with seeds
   13, 21, 42, 87, 100 (`--few_shot_k 16 --few_shot_seed S --seed S`), 50 steps, batch 8, lr 2e-4 (the settings of
   packages/prompt_tuning's few-shot benchmarks); and `n1000`, the first 1,000 training examples (the builtin splits
   are stored shuffled: natural class shares) with seeds 13, 21, 42 for the training's randomness, 2 epochs of batch
   16 at lr 1e-4. Test accuracy (and macro F1 / F1 where the dataset names one) on the builtin test split (at most
   1,000).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools" / "bench"))
from sweep import (  # noqa: E402
    SweepError,
    add_precision_option,
    logged_curve,
    logged_losses,
    plmkit_train,
    precision_flags,
    resolve_precision,
    run_sweep,
    write_json,
)

JSON = Path(__file__).parent / "results" / "capt_reproduction.json"
SEEDS = (13, 21, 42, 87, 100)
FULL_SEEDS = (13, 21, 42)
FULL_EXAMPLES = 1000
TASKS = ("rt-polarity", "trec", "sms-spam")
MODELS = ("minilm", "mlm", "mlm_time", "capt")  # none, MLM only (same steps, same CPU time), MLM + CAPT
PRETRAINED = ("mlm", "mlm_time", "capt")
PERF = Path(__file__).parent / "results" / "capt_perf.json"
PRETRAIN_SEED = 42
HEAD_BATCH = 32
PROBE_SENTENCES = 512
CORPUS = "builtin-text"


def key(r: dict) -> tuple:
    return r["stage"], r["model"], r.get("task"), r.get("seed"), r.get("regime")


def corpus_run_flags(model: str, steps: int, logging_steps: int, smoke: bool, data: str = CORPUS) -> list[str]:
    """What the head and the pre-training runs share: masked_lm on the corpus `data` at 64 tokens, quiet, no
    checkpoints; `smoke` shrinks the data."""
    flags = ["--task", "masked_lm", "--data", data, "--model_name_or_path", model, "--max_length", "64",
             "--max_steps", str(steps), "--seed", str(PRETRAIN_SEED), "--report_to", "none", "--save_strategy", "no",
             "--disable_tqdm", "true", "--logging_steps", str(logging_steps), "--overwrite_output_dir", "true"]
    if smoke:
        flags += ["--max_train_samples", "256", "--max_eval_samples", "64", "--logging_steps", "2"]
    return flags


def pretrain_flags(variant: str, steps: int, model: str, smoke: bool, precision: str = "bf16",
                   data: str = CORPUS) -> list[str]:
    return ["--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "128", "--learning_rate", "5e-5",
            "--warmup_steps", "0.06", "--weight_decay", "0.01", *precision_flags(precision),
            "--method", "capt" if variant == "capt" else "finetune", *corpus_run_flags(model, steps, 50, smoke, data)]


def model_path(model: str, work: Path, base: str) -> str:
    """What fine-tuning and the probe load: the base model, the MLM run folder, or the capt export."""
    if model == "minilm":
        return base
    folder = work / ("pretrain_capt_export" if model == "capt" else f"pretrain_{model}")
    if not (folder / "config.json").exists():
        raise SweepError(f"{folder} is missing: the pretrain stage's folders live in --work; rerun with the same "
                         f"--work, or delete the pretrain records from {JSON.name} to pre-train again")
    return str(folder)


def head_flags(base: str, steps: int, smoke: bool, data: str = CORPUS) -> list[str]:
    """The core's `head_only` method: the MLM head alone (the encoder and the decoder tied to the embeddings frozen)."""
    return ["--method", "head_only", "--per_device_train_batch_size", str(HEAD_BATCH), "--learning_rate", "1e-3",
            "--max_eval_samples", "256", *corpus_run_flags(base, steps, 10, smoke, data)]


def make_head(work: Path, base: str, steps: int, smoke: bool, data: str):
    def run_one(job: dict) -> dict:
        out = work / "minilm_head"
        metrics = plmkit_train(head_flags(base, steps, smoke, data), out)
        return {"steps": steps, "eval_masked_loss": metrics.get("eval_masked_loss"), "cpu_s": metrics["process_cpu_s"],
                "losses": logged_losses(out)}

    return run_one


def head_path(work: Path) -> str:
    folder = work / "minilm_head"
    if not (folder / "config.json").exists():
        raise SweepError(f"{folder} is missing: run the head stage first (--stages head pretrain ...), same --work")
    return str(folder)


def capt_step_cost() -> float:
    """A CAPT step's CPU time over an MLM step's (median, MiniLM), measured by perf.py."""
    if not PERF.exists():
        raise SweepError(f"{PERF} is missing: run benchmarks/perf.py first (mlm_time's steps come from its ratio)")
    return float(json.loads(PERF.read_text())["ratio_cpu_median"]["capt"])


def variant_steps(variant: str, steps: int) -> int:
    """`steps` for mlm and capt; for mlm_time, the MLM steps that cost the CPU time of `steps` CAPT steps."""
    return round(steps * capt_step_cost()) if variant == "mlm_time" else steps


def make_pretrain(work: Path, steps: int, smoke: bool, precision: str, data: str):
    def run_one(job: dict) -> dict:
        from plmkit.core.run import export_run

        out = work / f"pretrain_{job['model']}"
        steps_here = variant_steps(job["model"], steps)
        m = plmkit_train(pretrain_flags(job["model"], steps_here, head_path(work), smoke, precision, data), out)
        if job["model"] == "capt":
            export_run(out, work / "pretrain_capt_export")
        keep = ("eval_masked_loss", "eval_masked_accuracy", "test_masked_loss", "test_masked_accuracy", "train_loss",
                "train_runtime", "process_cpu_s", "capt_alignment", "capt_uniformity", "capt_train_alignment",
                "capt_train_uniformity")
        curve = logged_curve(out, ("loss", "loss/task", "loss/capt"))
        return {**{k: m[k] for k in keep if k in m}, "steps": steps_here, "curve": curve}

    return run_one


def make_probe(work: Path, base: str, n: int, data: str):
    def run_one(job: dict) -> dict:
        from plmkit.capt.analysis import noise_cosines, pooled_states
        from plmkit.capt.losses import uniformity
        from plmkit.core.models import load_model
        from plmkit.core.tasks import DataSource, build_task

        texts = list(build_task("masked_lm", {}, DataSource(data=data)).load()["test"]["text"][:n])
        model, tokenizer = load_model(model_path(job["model"], work, base), kind="masked-lm")
        row: dict = {"sentences": len(texts), "geometry": {}}
        for pooling in ("cls", "mean"):
            cos = noise_cosines(model, tokenizer, texts, pooling=pooling)
            row[pooling] = {noise: [round(float(v), 5) for v in values] for noise, values in cos.items()}
            # alignment of unit vectors: E ||u - v||^2 = E (2 - 2 cos(u, v)), over the masked pairs
            row["geometry"][pooling] = {"alignment": float((2 - 2 * cos["masking"]).mean()),
                                        "uniformity": uniformity(pooled_states(model, tokenizer, texts, pooling))}
        return row

    return run_one


def finetune_flags(job: dict, path: str, steps: int, examples: int = FULL_EXAMPLES,
                   max_steps: int | None = None, precision: str = "bf16") -> list[str]:
    """Regime k16: LM-BFF's K = 16 per class (seeded sampler), `steps` steps of batch 8 at lr 2e-4. Regime n1000:
    the first `examples` examples of the builtin training split (stored shuffled), 2 epochs of batch 16 at lr 1e-4,
    the seed varying the training only (`max_steps` caps it in --smoke)."""
    seed = str(job["seed"])
    common = ["--model_name_or_path", path, "--data", job["task"], "--seed", seed, "--max_length", "64",
              "--per_device_eval_batch_size", "64", "--max_eval_samples", "1000", *precision_flags(precision),
              "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--logging_steps", "1000",
              "--method", "finetune"]
    if job["regime"] == "k16":
        return common + ["--few_shot_k", "16", "--few_shot_seed", seed, "--max_steps", str(steps),
                         "--learning_rate", "2e-4", "--per_device_train_batch_size", "8"]
    cap = ["--max_steps", str(max_steps)] if max_steps is not None else []
    return common + ["--max_train_samples", str(examples), "--num_train_epochs", "2", "--learning_rate", "1e-4",
                     "--per_device_train_batch_size", "16", *cap]


def make_finetune(work: Path, base: str, steps: int, examples: int = FULL_EXAMPLES, max_steps: int | None = None,
                  precision: str = "bf16"):
    def run_one(job: dict) -> dict:
        flags = finetune_flags(job, model_path(job["model"], work, base), steps, examples, max_steps, precision)
        with tempfile.TemporaryDirectory(dir=work, prefix="capt_ft_") as tmp:
            m = plmkit_train(flags, Path(tmp) / "run")
        return {k: m[k] for k in ("test_accuracy", "test_f1", "test_macro_f1", "eval_accuracy", "process_cpu_s")
                if k in m}

    return run_one


def copy_base_runs(source: Path, json_path: Path, settings: dict) -> None:
    """Copy the `minilm` fine-tuning runs of another reproduction json into `json_path`, each marked with
    `"from": source's name`. The base model never sees the pre-training corpus, so they are the runs this sweep would
    make: refused unless the fine-tuning settings are the same."""
    other = json.loads(source.read_text())
    same = ("base_model", "precision", "finetune_steps", "full_examples", "finetune_flags", "finetune_flags_n1000")
    differ = [k for k in same if other.get("settings", {}).get(k) != settings[k]]
    if differ:
        raise SystemExit(f"{source} fine-tunes with other settings ({', '.join(differ)}): its minilm runs are not "
                         f"this sweep's")
    data = json.loads(json_path.read_text()) if json_path.exists() else {"runs": [], "settings": settings}
    done = {key(r) for r in data["runs"]}
    copied = [{**r, "from": source.name} for r in other["runs"]
              if r["stage"] == "finetune" and r["model"] == "minilm" and key(r) not in done]
    data["runs"] += copied
    write_json(json_path, data)
    print(f"[reproduce] {len(copied)} minilm fine-tuning runs copied from {source}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000,
                        help="continued pre-training steps of mlm and capt (mlm_time: this times the step-cost ratio)")
    parser.add_argument("--head_steps", type=int, default=300, help="steps of the head stage (the head alone)")
    parser.add_argument("--finetune_steps", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds of the K = 16 regime")
    parser.add_argument("--full_seeds", type=int, nargs="+", default=list(FULL_SEEDS),
                        help="seeds of the 1,000-example regime")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--stages", nargs="+", default=["head", "pretrain", "probe", "finetune"],
                        choices=("head", "pretrain", "probe", "finetune"))
    add_precision_option(parser)
    parser.add_argument("--parallel", type=int, default=2, help="training subprocesses at a time")
    parser.add_argument("--work", type=Path, default=Path("outputs/capt_reproduction"))
    parser.add_argument("--json", type=Path, default=JSON)
    parser.add_argument("--data", default=CORPUS,
                        help="the pre-training corpus (masked_lm's --data: corpora joined with '+'); the probe reads its "
                             "test split")
    parser.add_argument("--base_runs_from", type=Path,
                        help="a reproduction json whose minilm fine-tuning runs (the same settings) are copied instead "
                             "of rerun: the base model does not depend on the corpus")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny-bert, 4 pre-training and 4 fine-tuning steps, one task and seed, 16 sentences")
    args = parser.parse_args()
    base = "minilm"
    probe_n = PROBE_SENTENCES
    examples, full_cap = FULL_EXAMPLES, None
    if args.smoke:
        base, args.steps, args.head_steps, args.finetune_steps, probe_n = "tiny-bert", 4, 4, 4, 16
        examples, full_cap = 64, 4
        args.seeds, args.full_seeds, args.tasks = args.seeds[:1], args.full_seeds[:1], args.tasks[:1]
        if args.json == JSON:
            args.json = args.work / "capt_reproduction_smoke.json"
    args.work.mkdir(parents=True, exist_ok=True)
    precision = resolve_precision(args.precision)
    old = json.loads(args.json.read_text()) if args.json.exists() else {"runs": []}
    recorded = old.get("settings", {}).get("precision", "bf16")
    if old["runs"] and recorded != precision:
        raise SystemExit(f"{args.json} holds {recorded} runs: resume with --precision {recorded}, or write to "
                         f"another --json")
    settings = {
        "base_model": base, "pretrain_steps": args.steps,
        "data": args.data,
        "pretrain_flags": pretrain_flags("capt", args.steps, "WORK/minilm_head", args.smoke, precision, args.data),
        "precision": precision,
        "models": list(MODELS), "mlm_time_steps": variant_steps("mlm_time", args.steps), "head_steps": args.head_steps,
        "finetune_steps": args.finetune_steps, "seeds": args.seeds, "tasks": args.tasks,
        "full_seeds": args.full_seeds, "full_examples": examples,
        "finetune_flags": finetune_flags({"task": "TASK", "seed": "SEED", "regime": "k16"}, "MODEL",
                                         args.finetune_steps, precision=precision),
        "finetune_flags_n1000": finetune_flags({"task": "TASK", "seed": "SEED", "regime": "n1000"}, "MODEL",
                                               args.finetune_steps, examples, full_cap, precision),
        "probe_sentences": probe_n, "noise_rate": 0.15,
    }
    if args.base_runs_from:
        copy_base_runs(args.base_runs_from, args.json, settings)
    if "head" in args.stages:
        run_sweep(args.json, [{"stage": "head", "model": "minilm"}],
                  make_head(args.work, base, args.head_steps, args.smoke, args.data), key, parallel=1, settings=settings)
    if "pretrain" in args.stages:
        # the two longest runs first (mlm_time, capt: the same CPU time), so two processes finish together
        jobs = [{"stage": "pretrain", "model": m} for m in ("mlm_time", "capt", "mlm")]
        run_sweep(args.json, jobs, make_pretrain(args.work, args.steps, args.smoke, precision, args.data), key,
                  parallel=min(args.parallel, len(PRETRAINED)), settings=settings)
    if "probe" in args.stages:
        jobs = [{"stage": "probe", "model": m} for m in MODELS]
        run_sweep(args.json, jobs, make_probe(args.work, base, probe_n, args.data), key, parallel=1,
                  settings=settings)
    if "finetune" in args.stages:
        jobs = [{"stage": "finetune", "regime": regime, "model": m, "task": t, "seed": s}
                for regime, seeds in (("k16", args.seeds), ("n1000", args.full_seeds))
                for s in seeds for t in args.tasks for m in MODELS]  # seed-major: partial runs stay paired
        run_sweep(args.json, jobs,
                  make_finetune(args.work, base, args.finetune_steps, examples, full_cap, precision), key,
                  parallel=args.parallel, settings=settings)


if __name__ == "__main__":
    main()
