"""UPT reproduction on the builtin real data (minilm, K = 16): fine-tuning vs UPT-Single vs UPT vs UPT w/o KSMLM.

Sources of a target come from the other task groups only (`plmkit.prompt_tuning.sources.sources_for`). Every
prompt variant starts from the same head-adapted minilm (`plmkit upt adapt-head`); UPT-Single is also run once
per target from plain minilm (fresh masked-LM head transform) to measure what the adapted head buys.

    PLMKIT_NUM_THREADS=1 python packages/prompt_tuning/benchmarks/upt_reproduce.py --work /tmp/upt_bench      # resumable
    python packages/prompt_tuning/benchmarks/upt_render_table.py                        # README table + plot

Needs `plmkit upt adapt-head --out WORK/minilm-mlm` and `plmkit upt build-okr ... --out WORK/okr_TARGET.json`
(spaCy extra) first. Stage 1 is `plmkit train --task upt_stage1 --method upt`. Results go to
packages/prompt_tuning/benchmarks/results/upt_reproduction.json after every run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from plmkit.core.cli import main as plmkit
from plmkit.prompt_tuning.sources import SOURCES, sources_for

RESULTS = Path(__file__).parent / "results" / "upt_reproduction.json"
SETUP = {
    "model": "minilm", "k": 16, "seeds": [13, 21, 42, 87, 100], "targets": ["rt-polarity", "trec", "sms-spam"],
    "stage2_steps": 50, "stage1_steps": 60, "batch": 8, "learning_rate": 2e-4, "max_length": 64, "bf16": True,
    "max_test": 300, "stage1_train_per_source": 1000, "stage1_eval_per_source": 64,
}
METHODS = ("finetune", "upt_single", "upt", "upt_no_ksmlm", "upt_single_fresh_head")


def _common(out: Path, steps: int) -> list[str]:
    return ["--output_dir", str(out), "--overwrite_output_dir", "true", "--max_steps", str(steps),
            "--per_device_train_batch_size", str(SETUP["batch"]), "--per_device_eval_batch_size", "64",
            "--learning_rate", str(SETUP["learning_rate"]), "--max_length", str(SETUP["max_length"]),
            "--bf16", str(SETUP["bf16"]).lower(), "--report_to", "none", "--save_strategy", "no", "--num_threads", "1"]


def _stage1(work: Path, target: str, ksmlm: bool) -> Path:
    out = work / f"stage1_{target}_{'ksmlm' if ksmlm else 'no_ksmlm'}"
    if (out / "metrics.json").exists():
        return out
    flags = ["--task.okr", str(work / f"okr_{target}.json")] if ksmlm else ["--method.ksmlm_share", "0"]
    plmkit(["train", "--model_name_or_path", str(work / "minilm-mlm"), *_common(out, SETUP["stage1_steps"]),
            "--max_train_samples", str(SETUP["stage1_train_per_source"]),
            "--max_eval_samples", str(SETUP["stage1_eval_per_source"]), "--seed", "13", "--task", "upt_stage1",
            "--task.sources", ",".join(sources_for(target)), "--task.seed", "13", "--method", "upt", *flags])
    return out


def _run(work: Path, target: str, method: str, seed: int) -> dict:
    out = work / f"{target}_{method}_{seed}"
    flags = ["--data", target, "--few_shot_k", str(SETUP["k"]), "--few_shot_seed", str(seed), "--seed", str(seed),
             "--max_eval_samples", str(SETUP["max_test"]), *_common(out, SETUP["stage2_steps"])]
    words = ",".join(SOURCES[target].label_words)
    model = {"finetune": "minilm", "upt_single": str(work / "minilm-mlm"), "upt_single_fresh_head": "minilm",
             "upt": str(_stage1(work, target, True)) if method == "upt" else "",
             "upt_no_ksmlm": str(_stage1(work, target, False)) if method == "upt_no_ksmlm" else ""}[method]
    method_flags = ["--method", "finetune"] if method == "finetune" else ["--method", "upt", "--method.label_words", words]
    plmkit(["train", "--model_name_or_path", model, *flags, *method_flags])
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="/tmp/upt_bench")
    args = parser.parse_args()
    work = Path(args.work)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"setup": SETUP, "runs": []}
    results["setup"] = SETUP
    done = {(r["target"], r["method"], r["seed"]) for r in results["runs"]}
    start = time.time()
    for seed in SETUP["seeds"]:
        for target in SETUP["targets"]:
            for method in METHODS:
                if method == "upt_single_fresh_head" and seed != SETUP["seeds"][0]:
                    continue
                if (target, method, seed) in done:
                    continue
                t0 = time.time()
                metrics = _run(work, target, method, seed)
                results["runs"].append({"target": target, "method": method, "seed": seed,
                                        "test_accuracy": metrics["test_accuracy"], "seconds": round(time.time() - t0, 1)})
                results["wall_minutes"] = round(results.get("wall_minutes", 0) + (time.time() - t0) / 60, 1)
                RESULTS.parent.mkdir(exist_ok=True)
                RESULTS.write_text(json.dumps(results, indent=2))
    head = work / "minilm-mlm" / "head_adaptation.json"
    if head.exists():
        results["head_adaptation"] = json.loads(head.read_text())
    results["stage1"] = {p.name: {k: v for k, v in json.loads((p / "metrics.json").read_text()).items()
                                  if k in ("eval_accuracy", "stage1_train_examples", "train_runtime")}
                         for p in sorted(work.glob("stage1_*")) if (p / "metrics.json").exists()}
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"done in {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
