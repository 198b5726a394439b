"""CP-Tuning reproduction on the builtin real data (minilm, LM-BFF K=16 splits), against its baselines.

    PLMKIT_NUM_THREADS=1 .venv/bin/python packages/prompt_tuning/benchmarks/cp_tuning_reproduce.py [--seeds 13 21 42 87 100] [--steps 50]
      -> packages/prompt_tuning/benchmarks/results/cp_tuning_reproduce.json, cp_tuning_features.png
    .venv/bin/python packages/prompt_tuning/benchmarks/cp_tuning_render_table.py   (README table from the json)

Variants per (target, seed): fine-tuning (core `finetune`), prompt tuning with a verbalizer (`prompt_tuning`),
CP-Tuning without and with the auxiliary MLM (`cp_tuning`, mlm_weight 0 / 0.1), each CP-Tuning model evaluated by
nearest anchor (the reference's prediction, trained with it) and by class centroid; with `--adapted_head PATH` also CP-Tuning from a minilm whose
masked-LM head was adapted first (`plmkit upt adapt-head --out PATH`, as for UPT). Same steps, batch, learning rate and max_length for all.
The json is rewritten after every run and finished runs are skipped, so an interrupted reproduction resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from plmkit.core.config import parse_experiment
from plmkit.core.run import build_run_task, load_run, train
from plmkit.core.training import Trainer

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "cp_tuning_reproduce.json"
PLOT = RESULTS / "cp_tuning_features.png"

# LM-BFF-style manual templates and single-token label words for the verbalizer baseline (label order of the data).
VERBALIZER = {
    "rt-polarity": ("{text} It was {mask} .", "terrible,great"),
    "trec": ("{mask} : {text}", "expression,description,entity,human,location,number"),
    "sms-spam": ("{text} This is {mask} .", "normal,junk"),
}
# The reproduction's batches of 8 hold 2 examples of each of 4 classes on trec, below CP-Tuning's default
# min_per_class (4): it measures that setting, so the check is off.
ANY_BATCH = ["--method.min_per_class", "0"]
VARIANTS = {
    "finetune": ["--method", "finetune"],
    "prompt_tuning": ["--method", "prompt_tuning"],  # template and words added per target
    "cp_tuning": ["--method", "cp_tuning", "--method.mlm_weight", "0", "--method.prediction", "nearest", *ANY_BATCH],
    "cp_tuning_mlm": ["--method", "cp_tuning", "--method.mlm_weight", "0.1", "--method.prediction", "nearest",
                      *ANY_BATCH],
    # minilm ships no trained masked-LM head, so CP-Tuning's feature transform starts random; this variant starts
    # from the head adapted by `plmkit upt adapt-head` (run only with --adapted_head PATH)
    "cp_tuning_adapted_head": ["--method", "cp_tuning", "--method.mlm_weight", "0", "--method.prediction", "nearest",
                               *ANY_BATCH],
}


def _flags(target: str, seed: int, variant: str, args: argparse.Namespace, out: str) -> list[str]:
    flags = [
        "--model_name_or_path", args.adapted_head if variant == "cp_tuning_adapted_head" else "minilm", "--data", target, "--few_shot_k", "16", "--few_shot_seed", str(seed),
        "--seed", str(seed), "--max_length", "64", "--max_steps", str(args.steps), "--learning_rate", str(args.lr),
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "64", "--max_eval_samples", "1000",
        "--bf16", "true", "--output_dir", out, "--report_to", "none", "--save_strategy", "no",
        "--disable_tqdm", "true", "--num_threads", "1", "--logging_steps", "1000", *VARIANTS[variant],
    ]
    if variant == "prompt_tuning":
        template, words = VERBALIZER[target]
        flags += ["--method.template", template, "--method.label_words", words]
    return flags


def _evaluate(run_dir: str, prediction: str, want_features: bool = False) -> tuple[dict, np.ndarray | None]:
    """Test metrics of a saved CP-Tuning run with `prediction` switched (and the test features if asked)."""
    model, tokenizer, method, cfg = load_run(run_dir)
    model.config.prediction = prediction
    task = build_run_task(cfg)
    encoded = task.encode(task.load(), tokenizer, cfg.model.max_length, method.batch_columns)
    cfg.training.report_to = []
    trainer = Trainer(model, cfg.training, task=task, data_collator=task.collator(tokenizer, model),
                      processing_class=tokenizer, compute_metrics=task.compute_metrics())
    output = trainer.predict(encoded["test"], metric_key_prefix="test")
    features = None
    if want_features:
        features = {"test": output.predictions[1], "test_labels": output.label_ids,
                    "anchors": model.anchor_features.numpy(), "anchor_labels": model.anchor_labels.numpy(),
                    "label_names": list(task.task_data.label_names)}
    return output.metrics, features


def _plot(features: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(np.concatenate([features["test"], features["anchors"]]))
    test, anchors = pca.transform(features["test"]), pca.transform(features["anchors"])
    fig, ax = plt.subplots(figsize=(6, 5))
    for c, name in enumerate(features["label_names"]):
        sel = features["test_labels"] == c
        ax.scatter(test[sel, 0], test[sel, 1], s=6, alpha=0.4, label=f"test: {name}")
        sel = features["anchor_labels"] == c
        ax.scatter(anchors[sel, 0], anchors[sel, 1], s=60, marker="*", edgecolors="k", label=f"anchor: {name}")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)


def _summary(runs: list[dict]) -> dict:
    table: dict = {}
    for r in runs:
        table.setdefault(r["target"], {}).setdefault(r["variant"], []).append(r["test_accuracy"])
    return {
        t: {v: {"mean": statistics.mean(a), "std": statistics.stdev(a) if len(a) > 1 else 0.0, "n": len(a)}
            for v, a in vs.items()}
        for t, vs in table.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", nargs="+", default=list(VERBALIZER))
    parser.add_argument("--seeds", nargs="+", type=int, default=[13, 21, 42, 87, 100])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--plot_target", default="rt-polarity")
    parser.add_argument("--adapted_head", help="minilm with an adapted masked-LM head (plmkit upt adapt-head --out)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = json.loads(OUT.read_text()) if OUT.exists() else {"runs": []}
    result["settings"] = {
        "model": "minilm", "k": 16, "seeds": args.seeds, "max_steps": args.steps, "learning_rate": args.lr,
        "batch_size": 8, "max_length": 64, "bf16": True, "test_examples_max": 1000, "threads": 1,
        "selection": "last step (no dev-set checkpoint selection)",
    }
    done = {(r["target"], r["seed"], r["variant"]) for r in result["runs"]}
    for seed in args.seeds:  # seed-major: an interrupted run still covers every target
        for target in args.targets:
            for variant in VARIANTS:
                if variant == "cp_tuning_adapted_head" and not args.adapted_head:
                    continue
                names = [variant] + ([f"{variant}_centroid"] if variant.startswith("cp_tuning") else [])
                if all((target, seed, n) in done for n in names):
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    start, cpu = time.perf_counter(), time.process_time()
                    metrics = train(parse_experiment(_flags(target, seed, variant, args, tmp)))
                    row = {"target": target, "seed": seed, "wall_s": round(time.perf_counter() - start, 1),
                           "cpu_s": round(time.process_time() - cpu, 1), "load_avg": os.getloadavg()[0]}
                    result["runs"].append({**row, "variant": variant, "test_accuracy": metrics["test_accuracy"],
                                           "eval_accuracy": metrics["eval_accuracy"]})
                    if variant.startswith("cp_tuning"):
                        plot = variant == "cp_tuning" and target == args.plot_target and seed == args.seeds[0]
                        centroid, features = _evaluate(tmp, "centroid", want_features=plot)
                        result["runs"].append({**row, "variant": f"{variant}_centroid",
                                               "test_accuracy": centroid["test_accuracy"]})
                        if features is not None:
                            _plot(features, f"CP-Tuning [MASK] features, {target} K=16 seed {seed}, test set (PCA; "
                                            f"stars: training anchors)")
                print(json.dumps(result["runs"][-1]), flush=True)
                result["summary"] = _summary(result["runs"])
                OUT.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
