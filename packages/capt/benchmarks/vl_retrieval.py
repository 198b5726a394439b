"""CAPT's vision-language claim at small scale: emoji retrieval with and without the CAPT term.

    PLMKIT_NUM_THREADS=1 .venv/bin/python packages/capt/benchmarks/vl_retrieval.py [--parallel 2] [--steps 300]
      -> packages/capt/benchmarks/results/capt_vl_retrieval.json (resumable: finished runs are skipped)
    .venv/bin/python packages/capt/benchmarks/vl_retrieval.py --smoke --work /tmp/x   (coloured shapes, tiny models)

Both arms train the same SemVLP model (`plmkit vlp init`: MiniLM's trunk, a random resnet18 at 64 px, cross-attention
in the top 2 layers, the same initial weights for a seed) with `plmkit train --task image_text --method capt` on the
emoji builtin (`plmkit vlp prepare-data emoji` first) for the same steps, data order and masks: x~ masks 15% of the
caption tokens and zeroes 15% of the image tokens' features; the loss is the task's image-text matching loss plus
`--mlm_weight` times the model's MLM loss on x~ (default 0.05: with weight 1 the MLM gradient of MiniLM's untrained
head drowns the matching loss, see packages/vlp's STATUS.md) plus, in `capt`, the NT-Xent between each pair and its
corrupted version (`capt_weight` 1), in `no_capt` nothing more (`capt_weight` 0). The paper (Luo et al. 2021) adds the
term to LXMERT's objectives and reports +0.8 on NLVR2; here the measure is text-to-image R@1 (and image-to-text) with
the matching head, single-stream, among the first `--eval_examples` (default 100) test emoji: the matching head scores
every (caption, image) pair, so the whole 300-emoji test split (90,000 pair forwards of the trunk) costs more CPU than
the training itself. Verdict: `paired_verdict` over seeds (render_table.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools" / "bench"))
from sweep import plmkit_train, run_sweep  # noqa: E402

JSON = Path(__file__).parent / "results" / "capt_vl_retrieval.json"
ARMS = {"capt": 1.0, "no_capt": 0.0}  # capt_weight
SEEDS = (1, 2, 3)
KEEP = ("test_itm_single_t2i_r1", "test_itm_single_t2i_r5", "test_itm_single_i2t_r1", "test_itm_single_i2t_r5",
        "test_accuracy", "test_loss", "capt_alignment", "capt_uniformity", "train_loss", "process_cpu_s")


def key(r: dict) -> tuple:
    return r["arm"], r["seed"]


def init_model(work: Path, seed: int, smoke: bool) -> Path:
    """The seed's starting SemVLP folder (built once, shared by both arms)."""
    from plmkit.vlp.commands import build_model

    folder = work / f"init-{seed}"
    if not (folder / "config.json").exists():
        if smoke:
            model, processor = build_model("tiny-bert", "test_resnet", 64, seed, codebook_size=0, cross_attention_layers=1)
        else:
            model, processor = build_model("minilm", "resnet18", 64, seed, codebook_size=0, cross_attention_layers=2)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return folder


def train_flags(arm: str, seed: int, model: Path, steps: int, mlm_weight: float, data: list[str],
                eval_examples: int = 100) -> list[str]:
    return ["--model_name_or_path", str(model), *data, "--max_eval_samples", str(eval_examples), "--task", "image_text",
            "--method", "capt",
            "--method.capt_weight", str(ARMS[arm]), "--method.mlm_weight", str(mlm_weight), "--max_steps", str(steps),
            "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64", "--learning_rate", "1e-4",
            "--warmup_steps", "0.1", "--weight_decay", "0.01", "--max_length", "32", "--seed", str(seed),
            "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
            "--logging_steps", str(max(1, steps // 10))]


def make_run(work: Path, steps: int, mlm_weight: float, data: list[str], smoke: bool, eval_examples: int):
    def run_one(job: dict) -> dict:
        model = init_model(work, job["seed"], smoke)
        with tempfile.TemporaryDirectory(dir=work, prefix="vl_") as tmp:
            out = Path(tmp) / "run"
            m = plmkit_train(train_flags(job["arm"], job["seed"], model, steps, mlm_weight, data, eval_examples), out)
            history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        curve = [{k: h[k] for k in ("step", "loss/task", "loss/mlm", "loss/capt") if k in h}
                 for h in history if "loss/task" in h]
        return {**{k: m[k] for k in KEEP if k in m}, "steps": steps, "curve": curve}

    return run_one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--mlm_weight", type=float, default=0.05)
    parser.add_argument("--eval_examples", type=int, default=100,
                        help="retrieval among the first N validation and test pairs (chance R@1: 1/N)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("outputs/capt_vl"))
    parser.add_argument("--json", type=Path, default=JSON)
    parser.add_argument("--smoke", action="store_true", help="coloured shapes, tiny-bert and timm's test_resnet")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        from plmkit.vlp.testing import data_flags, write_image_text

        data = data_flags(write_image_text(args.work / "data"))
        args.steps, args.seeds = min(args.steps, 4), args.seeds[:1]
        if args.json == JSON:
            args.json = args.work / "capt_vl_retrieval_smoke.json"
    else:
        data = ["--data", "emoji"]
    settings = {"data": "coloured shapes (smoke)" if args.smoke else "the emoji builtin", "steps": args.steps, "seeds": args.seeds,
                "mlm_weight": args.mlm_weight, "arms": ARMS, "eval_examples": args.eval_examples,
                "flags": train_flags("capt", 0, Path("MODEL"), args.steps, args.mlm_weight, data, args.eval_examples)}
    jobs = [{"arm": arm, "seed": s} for s in args.seeds for arm in ARMS]  # seed-major: partial runs stay paired
    run_sweep(args.json, jobs, make_run(args.work, args.steps, args.mlm_weight, data, args.smoke, args.eval_examples), key,
              parallel=args.parallel, settings=settings)


if __name__ == "__main__":
    main()
