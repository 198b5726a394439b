"""Reproduction: knowledge-guided masking vs random masking in continual pre-training of MiniLM (resumable).

Stages (each a list of jobs recorded in `results/reproduction.json`; a rerun skips what is recorded):

0. `head`: all-MiniLM-L6-v2 ships no masked-LM head, so the head alone (`--method head_only`: the encoder and the
   decoder tied to the embeddings frozen) is trained first on the whole WordNet definitions corpus, `--head_steps`
   steps; every pre-training run starts from that folder (WORK/head).
1. `data`: the probe and the pre-training corpus, fixed by `DATA_SEED`: `--facts` facts with a single-token answer for
   MiniLM's tokenizer from each side of the probe's split, `injected` (the fact's statement is in the WordNet
   corpus) and `control` (it is nowhere in the corpus); the corpus = every definitions line that states an injected
   probed fact plus as many other lines, so a run of `--steps` steps sees each fact's line several times (the whole
   104,545-line corpus would show each line less than once at this budget). Validation: WordNet's validation lines.
2. `before`: the probe and the two findings (`plmkit.knowledge_pretraining.analysis`) on the head-only model.
3. `pretrain`: for each policy and seed, `plmkit train --task masked_lm --method knowledge_masking
   --method.policy P` from WORK/head, the same steps, batch, lr and length for every policy; then the probe (P@1,
   P@10, per relation and split) and the two findings on the trained model.
4. `finetune`: rt-polarity and trec fine-tuning (1,024 examples, 2 epochs) from the head-only model and from each
   policy's seed-`FINETUNE_SEED` model: nothing forgotten.

    PLMKIT_NUM_THREADS=1 .venv/bin/python packages/knowledge_pretraining/benchmarks/reproduce.py --parallel 2
    .venv/bin/python packages/knowledge_pretraining/benchmarks/render_table.py

`--smoke` runs every stage on tiny-bert with a few steps (for tests).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools" / "bench"))

from sweep import SweepError, logged_losses, plmkit_train, run_sweep  # noqa: E402

HERE = Path(__file__).resolve().parent
JSON = HERE / "results" / "reproduction.json"
POLICIES = ("random", "whole_word", "span", "salient_span", "loss_guided", "attention_guided")
NEEDS_SPACY = "salient_span"  # runs only where the [spacy] extra is installed
SEEDS = (1, 2, 3)
DATA_SEED = 0
FINETUNE_SEED = 1
FINETUNE_TASKS = ("rt-polarity", "trec")
ANALYSIS_LINES = 150  # validation lines for the two findings
HEAD_BATCH, HEAD_MAX_LENGTH = 32, 64
BATCH, LR, MAX_LENGTH = 16, 1e-4, 48  # sized for CPU: ~1.5 s a step for MiniLM on one thread


def common(smoke: bool) -> list[str]:
    return ["--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no", "--logging_steps", "20",
            *(["--config_overrides", "hidden_dropout_prob=0,attention_probs_dropout_prob=0"] if smoke else [])]


def head_flags(base: str, steps: int, smoke: bool) -> list[str]:
    return ["--task", "masked_lm", "--data", "wordnet-definitions", "--model_name_or_path", base,
            "--method", "head_only", "--max_steps", str(steps), "--per_device_train_batch_size", str(HEAD_BATCH),
            "--learning_rate", "1e-3", "--max_length", str(HEAD_MAX_LENGTH), "--max_eval_samples", "256",
            "--seed", str(DATA_SEED), *common(smoke)]


def pretrain_flags(work: Path, policy: str, seed: int, steps: int, smoke: bool) -> list[str]:
    corpus = work / "corpus"
    return ["--task", "masked_lm", "--train_file", str(corpus / "train.txt"), "--validation_file",
            str(corpus / "validation.txt"), "--model_name_or_path", str(work / "head"),
            "--method", "knowledge_masking", "--method.policy", policy, "--max_steps", str(steps),
            "--per_device_train_batch_size", str(BATCH), "--learning_rate", str(LR), "--warmup_steps", "0.06",
            "--max_length", str(MAX_LENGTH), "--seed", str(seed), "--overwrite_output_dir", *common(smoke)]


def finetune_flags(model: str, task: str, smoke: bool) -> list[str]:
    return ["--data", task, "--model_name_or_path", model, "--max_train_samples", "64" if smoke else "1024",
            "--num_train_epochs", "2", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "64",
            "--learning_rate", "1e-4", "--max_length", "16" if task == "trec" else "48",
            "--seed", str(FINETUNE_SEED), *(["--max_eval_samples", "64"] if smoke else []), *common(smoke)]


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------
def build_data(work: Path, tokenizer_source: str, n_facts: int) -> dict:
    """WORK/corpus/{train,validation}.txt and WORK/probe.jsonl (see the module docstring); returns their counts."""
    from plmkit.core.models import load_tokenizer
    from plmkit.knowledge_pretraining.wordnet import corpus_texts, load_facts, single_token_facts

    tokenizer = load_tokenizer(tokenizer_source)
    facts, skipped = single_token_facts(load_facts(), tokenizer)
    rng = random.Random(DATA_SEED)
    chosen = []
    for split in ("injected", "control"):
        side = [f for f in facts if f["split"] == split]
        chosen += rng.sample(side, min(n_facts, len(side)))
    texts = corpus_texts()
    statements = {s for f in chosen if f["split"] == "injected" for s in f["statements"]}
    stating = [line for line in texts["train"] if _sentences(line) & statements]
    taken = set(stating)
    others = [line for line in texts["train"] if line not in taken]
    corpus = stating + rng.sample(others, min(len(stating), len(others)))
    rng.shuffle(corpus)
    folder = work / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("\n".join(corpus) + "\n")
    (folder / "validation.txt").write_text("\n".join(texts["validation"]) + "\n")
    with (work / "probe.jsonl").open("w") as f:
        for fact in chosen:
            f.write(json.dumps({k: v for k, v in fact.items() if k != "answer_ids"}) + "\n")
    return {"facts": {s: sum(f["split"] == s for f in chosen) for s in ("injected", "control")},
            "skipped": skipped, "train_lines": len(corpus), "stating_lines": len(stating),
            "validation_lines": len(texts["validation"])}


def _sentences(line: str) -> set[str]:
    """The statement sentences of a definitions line ("X is a kind of Y." ...), as whole sentences."""
    out = set()
    for part in line.split(". "):
        part = part.strip()
        out.add(part if part.endswith(".") else part + ".")
    return out


def measure(model_dir: str, work: Path) -> dict:
    """The probe and the two findings of the model in `model_dir`, in a subprocess with one thread: sweep jobs run
    in threads, and loading models in two threads of one process at once is not safe in transformers."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "measure.json"
        env = {**os.environ, "PLMKIT_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, __file__, "--measure", model_dir, "--work", str(work), "--json",
                               str(out)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SweepError(f"measuring {model_dir} failed:\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def _measure_here(model_dir: str, work: Path) -> dict:
    import torch

    from plmkit.core.models import load_model
    from plmkit.knowledge_pretraining.analysis import analyze
    from plmkit.knowledge_pretraining.probe import probe, read_facts

    torch.set_num_threads(1)
    model, tokenizer = load_model(model_dir, kind="masked-lm")
    model.eval()
    result = probe(model, tokenizer, read_facts(work / "probe.jsonl"))
    lines = (work / "corpus" / "validation.txt").read_text().splitlines()[:ANALYSIS_LINES]
    findings = analyze(model, tokenizer, lines, mask_stride=3)
    return {"probe": result, "findings": findings}


# ---------------------------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------------------------
def _has_spacy() -> bool:
    import importlib.util

    from plmkit.knowledge_pretraining.method import KnowledgeMaskingConfig

    return all(importlib.util.find_spec(name) is not None for name in ("spacy", KnowledgeMaskingConfig.spacy_model))


def key(record: dict) -> tuple:
    return (record["stage"], record.get("policy", ""), record.get("seed", 0), record.get("task", ""))


def make_runner(work: Path, base: str, args: argparse.Namespace):
    def run_one(job: dict) -> dict:
        stage = job["stage"]
        if stage == "head":
            metrics = plmkit_train(head_flags(base, args.head_steps, args.smoke), work / "head")
            return {"eval_masked_loss": metrics.get("eval_masked_loss"), "cpu_s": metrics["process_cpu_s"],
                    "losses": logged_losses(work / "head")}
        if stage == "data":
            return build_data(work, base, args.facts)
        if stage == "before":
            return measure(str(work / "head"), work)
        if stage == "pretrain":
            out = work / "runs" / f"{job['policy']}-{job['seed']}"
            metrics = plmkit_train(pretrain_flags(work, job["policy"], job["seed"], args.steps, args.smoke), out)
            return {"eval_masked_loss": metrics.get("eval_masked_loss"),
                    "eval_masked_accuracy": metrics.get("eval_masked_accuracy"), "cpu_s": metrics["process_cpu_s"],
                    "method": {k: v for k, v in metrics.items() if k.startswith("masking_")},
                    **measure(str(out), work)}
        if stage == "finetune":
            model = str(work / "head") if job["policy"] == "head" else str(work / "runs" / f"{job['policy']}-{FINETUNE_SEED}")
            with tempfile.TemporaryDirectory() as tmp:
                metrics = plmkit_train(finetune_flags(model, job["task"], args.smoke), Path(tmp) / "run")
            return {"test_accuracy": metrics["test_accuracy"], "cpu_s": metrics["process_cpu_s"]}
        raise SweepError(f"unknown stage {stage!r}")

    return run_one


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/plmkit-knowledge-reproduction"),
                        help="folder for the head, the corpus and the runs (kept between reruns)")
    parser.add_argument("--json", type=Path, default=JSON)
    parser.add_argument("--steps", type=int, default=250, help="pre-training steps of every policy")
    parser.add_argument("--head_steps", type=int, default=300)
    parser.add_argument("--facts", type=int, default=500, help="probed facts per side (injected, control)")
    parser.add_argument("--policies", nargs="+", choices=POLICIES,
                        help=f"default: all ({NEEDS_SPACY} only where spaCy and its pipeline are installed)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--stages", nargs="+", default=["head", "data", "before", "pretrain", "finetune"],
                        choices=("head", "data", "before", "pretrain", "finetune"))
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny-bert, a few steps: checks the script only")
    parser.add_argument("--measure", metavar="MODEL", help=argparse.SUPPRESS)  # internal: one measurement -> --json
    args = parser.parse_args(argv)
    if args.measure:
        args.json.write_text(json.dumps(_measure_here(args.measure, args.work)))
        return 0
    if args.policies is None:
        args.policies = [p for p in POLICIES if p != NEEDS_SPACY or _has_spacy()]
        if NEEDS_SPACY not in args.policies:
            print(f"[reproduce] {NEEDS_SPACY} left out: pip install 'plmkit-knowledge-pretraining[spacy]' to run it")
    base = "minilm"
    if args.smoke:
        base, args.steps, args.head_steps, args.facts = "tiny-bert", 4, 4, 20
    settings = {"base": base, "steps": args.steps, "head_steps": args.head_steps, "facts_per_side": args.facts,
                "head_batch": HEAD_BATCH, "head_max_length": HEAD_MAX_LENGTH, "batch": BATCH, "lr": LR, "max_length": MAX_LENGTH, "analysis_lines": ANALYSIS_LINES,
                "pretrain_flags": pretrain_flags(Path("WORK"), "POLICY", 0, args.steps, args.smoke),
                "finetune_flags": finetune_flags("MODEL", "TASK", args.smoke), "smoke": args.smoke}
    run_one = make_runner(args.work, base, args)
    stages: list[list[dict]] = []
    if "head" in args.stages:
        stages.append([{"stage": "head"}])
    if "data" in args.stages:
        stages.append([{"stage": "data"}])
    if "before" in args.stages:
        stages.append([{"stage": "before"}])
    if "pretrain" in args.stages:
        stages.append([{"stage": "pretrain", "policy": p, "seed": s} for s in args.seeds for p in args.policies])
    if "finetune" in args.stages:
        stages.append([{"stage": "finetune", "policy": p, "task": t}
                       for p in ("head", *args.policies) for t in FINETUNE_TASKS])
    for jobs in stages:
        run_sweep(args.json, jobs, run_one, key, parallel=args.parallel, settings=settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
