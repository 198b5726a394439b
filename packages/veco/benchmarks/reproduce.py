"""Reproduction: does CA-MLM pre-training (VECO) help translation and cross-lingual understanding more than MLM-only
pre-training on the same data and steps, and than no pre-training? A small VECO on the verse-aligned Bible.

Arms (each for every seed; the seed fixes pre-training, initialisation and fine-tuning):
  (a) random   -- no pre-training (a random VECO of the same shape);
  (b) mlm      -- `veco_pretrain --task.objective mlm`: the H-stream MLM terms on x and y (XLM-R-style), same pairs;
  (c) veco     -- `veco_pretrain --task.objective veco`: MLM + CA-MLM (Eq. 3 of the paper).
Pre-training data: de-en and fr-en verse pairs plus monolingual adjacent-verse segments (en, de, fr) of the
training books (`plmkit veco prepare-data`), a joint 16k SentencePiece vocabulary with [de]/[en]/[fr]
(`plmkit veco vocab`). Model: a 4-layer VECO, its width set by the scale (NLG: 4+4 layers, the decoder initialised
from the pre-trained layers 0..3 with their cross-attention, as the official `--keep-decoder-layers`).

Evaluations, all on held-out books (Deuteronomy, Esther, Ecclesiastes, Daniel, John, Ephesians):
  NLG  -- de->en translation fine-tuned on the training books (core `seq2seq` task), sacreBLEU of beam-5 outputs;
  NLU  -- zero-shot retrieval P@1 de->en and fr->en (mean-pooled layer 3 of 4, cosine; `plmkit veco retrieve`);
          book-group classification (6 groups) fine-tuned on English verses, tested on English, German and French.

    python packages/veco/benchmarks/reproduce.py [--scale full|cpu|tiny] [--seeds 1 2 3] [--arms random mlm veco]

Resumable (tools/bench/sweep.py): finished jobs are kept in results/veco_reproduction.json (`--scale cpu`:
results/veco_reproduction_cpu.json) and skipped on rerun; pre-trained models stay in --work_dir. `--scale full` is
the budget of a GPU; `--scale cpu` is the same study with a narrower model (d=128) and about a tenth of the steps,
about 2.5 CPU hours a seed (the README block lists each stage's measured CPU time). `--scale tiny` is a start-up
check (about 4 CPU minutes; its json stays in --work_dir and is never rendered). Runs use bf16 autocast where it is
fast (`--precision`). `--stages` runs some stages only, in the order given. `--pretrain_steps N` tests the budget:
the scale with N pre-training steps (everything else unchanged), in its own json (`..._cpu_pretrain<N>.json`) and
its own folder under --work_dir (the data and vocabulary are shared). `render_table.py` renders the README block.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from sweep import (  # noqa: E402
    SweepError,
    add_precision_option,
    majority_share,
    plmkit_train,
    precision_flags,
    resolve_precision,
    run_python,
    run_sweep,
)

RESULTS = Path(__file__).parent / "results"
#: where each scale's runs are recorded (the tiny start-up check's stay in --work_dir)
JSONS = {"full": RESULTS / "veco_reproduction.json", "cpu": RESULTS / "veco_reproduction_cpu.json"}
ARMS = ("random", "mlm", "veco")

SCALES = {
    "full": dict(
        shape=dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
        max_pairs=None, vocab_size=16000, vocab_sentences=300000,
        pretrain=dict(steps=20000, batch=64, lr=5e-4, max_length=96),
        mt=dict(steps=4000, batch=64, lr=3e-4, max_length=128, eval_samples=1000, beams=5),
        retrieval=1000, cls=dict(train=8000, steps=1000, batch=32, lr=1e-4, max_length=96, eval_samples=2000),
    ),
    # sized for a 2-core CPU (bf16 autocast, one thread a job, two jobs at a time): the same data and vocabulary, a
    # narrower model (d=128) and about a tenth of the steps
    "cpu": dict(
        shape=dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512),
        max_pairs=None, vocab_size=16000, vocab_sentences=300000,
        pretrain=dict(steps=1500, batch=32, lr=1e-3, max_length=64),
        mt=dict(steps=1000, batch=32, lr=1e-3, max_length=64, eval_samples=400, beams=5),
        retrieval=1000, cls=dict(train=8000, steps=400, batch=32, lr=5e-4, max_length=64, eval_samples=1000),
    ),
    "tiny": dict(
        shape=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
        max_pairs=2000, vocab_size=1000, vocab_sentences=20000,
        pretrain=dict(steps=20, batch=8, lr=1e-3, max_length=48),
        mt=dict(steps=10, batch=8, lr=1e-3, max_length=48, eval_samples=16, beams=2),
        retrieval=50, cls=dict(train=200, steps=10, batch=8, lr=1e-3, max_length=48, eval_samples=50),
    ),
}


def cli(*argv: str, threads: int = 1) -> str:
    """`python -m plmkit.core.cli ...` in a subprocess; returns its stdout (raises SweepError on failure)."""
    return run_python(["-m", "plmkit.core.cli", *argv], threads, what=f"plmkit {' '.join(argv[:2])}")


def common(seed: int, precision: str) -> list[str]:
    return ["--seed", str(seed), "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no",
            "--logging_steps", "100", "--overwrite_output_dir", *precision_flags(precision)]


class Study:
    def __init__(self, args: argparse.Namespace) -> None:
        self.scale = SCALES[args.scale]
        shared = Path(args.work_dir) / args.scale
        self.data, self.tok = shared / "data", shared / "tokenizer"
        self.work = shared
        self.json = JSONS.get(args.scale, shared / "veco_reproduction.json")
        if args.pretrain_steps is not None:  # a budget check: its own runs and json, the same data and vocabulary
            if args.pretrain_steps < 1:
                raise SystemExit(f"--pretrain_steps must be positive, got {args.pretrain_steps}")
            self.scale = {**self.scale, "pretrain": {**self.scale["pretrain"], "steps": args.pretrain_steps}}
            self.work = shared / f"pretrain{args.pretrain_steps}"
            self.json = self.json.with_name(f"{self.json.stem}_pretrain{args.pretrain_steps}.json")
        self.threads, self.precision = args.threads, resolve_precision(args.precision)

    # -- shared inputs -------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        if not (self.data / "data.json").exists():
            argv = ["veco", "prepare-data", "--out", str(self.data), "--pairs", "de-en,fr-en", "--mono", "en,de,fr",
                    "--mt", "de-en,fr-en", "--classify", "en,de,fr"]
            if self.scale["max_pairs"]:
                argv += ["--max_pairs", str(self.scale["max_pairs"])]
            cli(*argv)
        if not (self.tok / "tokenizer_config.json").exists():
            cli("veco", "vocab", "--data", str(self.data), "--vocab_size", str(self.scale["vocab_size"]),
                "--input_sentence_size", str(self.scale["vocab_sentences"]), "--out", str(self.tok), "--overwrite",
                threads=self.threads)

    def encoder(self, arm: str, seed: int) -> Path:
        """The arm's encoder folder: a pre-training run, or a random VECO of the same shape (built here)."""
        folder = self.work / f"pretrain_{arm}_{seed}"
        if arm == "random" and not (folder / "config.json").exists():
            code = ("import sys, torch; from plmkit.core.models import register_model_types; register_model_types(); "
                    "from plmkit.veco import VecoConfig, VecoForPreTraining, VecoTokenizer; "
                    "tok = VecoTokenizer.from_pretrained(sys.argv[1]); torch.manual_seed(int(sys.argv[3])); "
                    f"m = VecoForPreTraining(VecoConfig(vocab_size=len(tok), **{self.scale['shape']!r})); "
                    "m.save_pretrained(sys.argv[2]); tok.save_pretrained(sys.argv[2])")
            run_python(["-c", code, str(self.tok), str(folder), str(seed)], what=f"a random VECO for seed {seed}")
        if not (folder / "config.json").exists():
            raise SweepError(f"{folder} is missing: the {arm} pre-training of seed {seed} is recorded in {self.json} "
                             "but its model is not in --work_dir; delete that run from the json to redo it")
        return folder

    def majority(self) -> float:
        """The share of the most frequent book group among the English test verses the classifier is scored on
        (what always guessing it scores; the German and French verses are the same ones)."""
        return majority_share(self.data / "classify" / "test.en.jsonl", self.scale["cls"]["eval_samples"])

    # -- jobs ---------------------------------------------------------------------------------------------------------
    def pretrain(self, job: dict) -> dict:
        p, out = self.scale["pretrain"], self.work / f"pretrain_{job['arm']}_{job['seed']}"
        metrics = plmkit_train([
            "--task", "veco_pretrain", "--task.objective", job["arm"], "--method", "veco",
            "--model_name_or_path", "veco", "--model_config", yaml.safe_dump(self.scale["shape"], default_flow_style=True),
            "--tokenizer_name_or_path", str(self.tok), "--train_file", str(self.data / "pretrain" / "train.jsonl"),
            "--validation_file", str(self.data / "pretrain" / "validation.jsonl"), "--max_eval_samples", "2000",
            "--max_steps", str(p["steps"]), "--per_device_train_batch_size", str(p["batch"]),
            "--per_device_eval_batch_size", str(2 * p["batch"]), "--learning_rate", str(p["lr"]),
            "--warmup_steps", "0.05", "--weight_decay", "0.01", "--max_length", str(p["max_length"]),
            *common(job["seed"], self.precision)], out, self.threads)
        keep = ("eval_masked_accuracy", "eval_mlm_x_accuracy", "eval_mlm_y_accuracy", "eval_ca_mlm_x_accuracy",
                "eval_ca_mlm_y_accuracy", "train_runtime", "process_cpu_s")
        return {k: metrics[k] for k in keep if k in metrics}

    def nlg(self, job: dict) -> dict:
        m, arm, seed = self.scale["mt"], job["arm"], job["seed"]
        folder = self.work / f"nlg_{arm}_{seed}"
        init = ["veco", "init-nlg", "--src", "de", "--tgt", "en", "--seed", str(seed), "--out", str(folder)]
        if arm == "random":
            layers = self.scale["shape"]["num_hidden_layers"]
            config = {**self.scale["shape"], "decoder_layers": layers}
            init += ["--config", yaml.safe_dump(config, default_flow_style=True), "--tokenizer", str(self.tok)]
        else:
            init += ["--model", str(self.encoder(arm, seed))]
        cli(*init)
        mt = self.data / "mt" / "de-en"
        metrics = plmkit_train([
            "--task", "seq2seq", "--task.num_beams", str(m["beams"]), "--task.max_target_length", str(m["max_length"]),
            "--model_name_or_path", str(folder), "--train_file", str(mt / "train.tsv"), "--test_file",
            str(mt / "test.tsv"), "--max_eval_samples", str(m["eval_samples"]), "--max_steps", str(m["steps"]),
            "--per_device_train_batch_size", str(m["batch"]), "--per_device_eval_batch_size", str(m["batch"]),
            "--learning_rate", str(m["lr"]), "--warmup_steps", "0.1", "--weight_decay", "0.01",
            "--label_smoothing_factor", "0.1", "--max_length", str(m["max_length"]), *common(seed, self.precision)],
            self.work / f"mt_{arm}_{seed}", self.threads)
        return {"test_bleu": metrics["test_bleu"], "test_chrf": metrics["test_chrf"],
                "train_runtime": metrics.get("train_runtime"), "process_cpu_s": metrics["process_cpu_s"]}

    def retrieval(self, job: dict) -> dict:
        folder = self.encoder(job["arm"], job["seed"])
        out = {}
        for pair in ("de-en", "fr-en"):
            line = cli("veco", "retrieve", "--model", str(folder), "--tsv", str(self.data / "mt" / pair / "test.tsv"),
                       "--max_samples", str(self.scale["retrieval"]), "--num_threads", str(self.threads),
                       threads=self.threads)
            out[f"p_at_1_{pair.replace('-', '_')}"] = json.loads(line.strip().splitlines()[-1])["precision_at_1"]
        return out

    def classify(self, job: dict) -> dict:
        c, arm, seed = self.scale["cls"], job["arm"], job["seed"]
        run = self.work / f"cls_{arm}_{seed}"
        files = self.data / "classify"
        metrics = plmkit_train([
            "--model_name_or_path", str(self.encoder(arm, seed)), "--train_file", str(files / "train.en.jsonl"),
            "--test_file", str(files / "test.en.jsonl"), "--max_train_samples", str(c["train"]),
            "--max_eval_samples", str(c["eval_samples"]), "--max_steps", str(c["steps"]),
            "--per_device_train_batch_size", str(c["batch"]), "--per_device_eval_batch_size", str(4 * c["batch"]),
            "--learning_rate", str(c["lr"]), "--warmup_steps", "0.1", "--max_length", str(c["max_length"]),
            *common(seed, self.precision)], run, self.threads)
        out = {"accuracy_en": metrics["test_accuracy"]}
        for lang in ("de", "fr"):
            shown = cli("eval", str(run), "--split", "test", "--test_file", str(files / f"test.{lang}.jsonl"),
                        "--max_eval_samples", str(c["eval_samples"]), threads=self.threads)
            out[f"accuracy_{lang}"] = json.loads(shown[shown.index("{"):])["test_accuracy"]
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=tuple(SCALES), default="full")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--stages", nargs="+", default=["pretrain", "nlg", "retrieval", "classify"])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("PLMKIT_NUM_THREADS", "1")))
    parser.add_argument("--parallel", type=int, default=1, help="jobs at a time")
    parser.add_argument("--work_dir", default="outputs/veco_reproduction")
    parser.add_argument("--pretrain_steps", type=int, help="override the scale's pre-training steps (a budget check)")
    add_precision_option(parser)
    args = parser.parse_args()
    study = Study(args)
    study.prepare()
    settings = {"scale": args.scale, "precision": study.precision, **study.scale, "majority": study.majority(),
                "setup": __doc__.split("\n\n")[1].replace("\n", " ")}
    key = lambda r: (r["stage"], r["arm"], r["seed"])  # noqa: E731
    stages = {"pretrain": study.pretrain, "nlg": study.nlg, "retrieval": study.retrieval, "classify": study.classify}
    failed = []
    for stage in args.stages:
        arms = [a for a in args.arms if a != "random"] if stage == "pretrain" else args.arms
        jobs = [{"stage": stage, "arm": arm, "seed": seed} for seed in args.seeds for arm in arms]
        try:
            run_sweep(study.json, jobs, stages[stage], key=key, parallel=args.parallel, settings=settings)
        except SweepError as err:
            failed.append(str(err))
            if stage == "pretrain":
                break
    if failed:
        raise SystemExit("\n".join(failed))


if __name__ == "__main__":
    main()
