"""The multilingual study of the ACL 2022 paper at small scale: structured pruning of a multilingual encoder
pre-trained here, with one mask shared by all languages against one mask per language, three algorithms,
zero-shot cross-lingual transfer, and Dynamic Sparsification; every model tested in English, German and French.

Backbones (`--backbone NAME=FOLDER`, several allowed): pre-trained encoders in XLM-R form, or VECO pre-training
folders, exported here with `plmkit veco export` (the plug-out encoder as XLMRobertaForMaskedLM). The study was
planned on the VECO reproduction's encoders (packages/veco/benchmarks/reproduce.py): `veco` (CA-MLM) and `mlm`
(plain MLM on the same data and steps).
Task: the Bible book-group task (6 groups; `plmkit veco prepare-data`'s classify/ files, `--data`), the same
verses in every language. Training: `--train` verses drawn once (seed 0) from the training books, in en+de+fr
(translate-train, 3 rows a verse) or in English only (zero-shot); test: `--test` other verses of the training books
per language (`--test_books training`, the default: on the held-out books, `held_out`, a small encoder pre-trained on
CPU stays below the majority class even unpruned, so pruning could not be compared there).

Settings (each backbone x seed; the pruned ones at every algorithm x sparsity):
  bag_of_tokens     -- a reference without the encoder: a linear classifier on the mean one-hot of the backbone's
                       tokens (its own tokenizer), trained on en+de+fr; it tells how much of the task the words
                       alone give, so how much an encoder's layers (what pruning removes) can matter;
  dense / dense_en  -- fine-tuning without pruning, on en+de+fr / on English only;
  shared            -- one mask for all languages, trained on en+de+fr;
  per_language      -- one mask per language over the same weights (each example gated by its language);
  zero_shot         -- one mask, trained on English only, tested on de and fr as well;
  ds                -- Dynamic Sparsification on en+de+fr, one run tested at every sparsity.
Every model is also scored on zero-shot retrieval of held-out verse pairs (P@1 de->en and fr->en, mean-pooled layer
3 of 4, cosine), compacted to its kept units; with per-language masks each side is embedded by its own language's
sub-network.

    python packages/structured_pruning/benchmarks/multilingual.py --data DIR --backbone veco=RUN --backbone mlm=RUN \
        [--seeds 1 2 3] [--settings ...] [--algorithms ...] [--sparsities 0.3 0.5 0.7 0.9] [--parallel 2]

Resumable (tools/bench/sweep.py): runs are recorded in results/structured_pruning_multilingual.json (`--json`)
and skipped on rerun; `render_table.py` renders them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "bench"))
from sweep import (  # noqa: E402
    add_precision_option,
    majority_share,
    plmkit_train,
    precision_flags,
    resolve_precision,
    run_python,
    run_sweep,
)

RESULTS = Path(__file__).parent / "results"
JSON = RESULTS / "structured_pruning_multilingual.json"
LANGUAGES = ("en", "de", "fr")
PAIRS = ("de-en", "fr-en")
PRUNED = ("shared", "per_language", "zero_shot")
SETTINGS = ("bag_of_tokens", "dense", "dense_en", *PRUNED, "ds")
ENGLISH_ONLY = ("dense_en", "zero_shot")  # trained on English only: de and fr are zero-shot
# full-batch steps of the bag-of-tokens reference (seed 1, mean test accuracy after 30 / 60 / 120 / 240 steps:
# 49.3 / 57.7 / 61.4 / 62.1%)
BAG_OF_TOKENS_EPOCHS = 200
ALGORITHMS: dict[str, list[str]] = {
    "first_order": ["--method.algorithm", "first_order"],
    "first_order_iterative": ["--method.algorithm", "first_order", "--method.iterations", "3"],
    "movement": ["--method.algorithm", "movement"],
    "l0": ["--method.algorithm", "l0"],
}


# -- data and backbones --------------------------------------------------------------------------------------------
def write_data(data: Path, work: Path, n_train: int, n_test: int, test_books: str = "training") -> dict[str, str]:
    """Training files (en+de+fr and English only, the same verses) and per-language test files, drawn once (seed
    0). `test_books`: "held_out" tests on the held-out books; "training" on other verses of the training books."""
    folder = work / f"data-{test_books}-{n_train}-{n_test}"
    files = {"train": folder / "train.jsonl", "train_en": folder / "train.en.jsonl",
             **{f"test_{lang}": folder / f"test.{lang}.jsonl" for lang in LANGUAGES}}
    if all(f.exists() for f in files.values()):
        return {k: str(v) for k, v in files.items()}
    rows = {}
    for split in ("train", "test"):
        rows[split] = {lang: (data / "classify" / f"{split}.{lang}.jsonl").read_text().splitlines() for lang in LANGUAGES}
        if len({len(r) for r in rows[split].values()}) != 1:
            raise SystemExit(f"{data / 'classify'}: the {split} files of {LANGUAGES} are not verse-aligned")
    order = random.Random(0).sample(range(len(rows["train"]["en"])), len(rows["train"]["en"]))
    if test_books == "held_out":
        test_rows = rows["test"]
        test = random.Random(0).sample(range(len(test_rows["en"])), min(n_test, len(test_rows["en"])))
    else:
        test_rows, test = rows["train"], order[n_train : n_train + n_test]
    train = sorted(order[:n_train])
    folder.mkdir(parents=True, exist_ok=True)
    for lang in LANGUAGES:
        files[f"test_{lang}"].write_text("".join(test_rows[lang][i] + "\n" for i in sorted(test)))
    files["train_en"].write_text("".join(rows["train"]["en"][i] + "\n" for i in train))
    files["train"].write_text("".join(rows["train"][lang][i] + "\n" for i in train for lang in LANGUAGES))
    return {k: str(v) for k, v in files.items()}


def backbone_folder(name: str, source: Path, work: Path) -> Path:
    """`source` itself when it is an XLM-R-form model, else its `plmkit veco export` (made once)."""
    model_type = json.loads((source / "config.json").read_text()).get("model_type")
    if model_type != "veco":
        return source
    out = work / "backbones" / name
    if not (out / "config.json").exists():
        run_python(["-m", "plmkit.core.cli", "veco", "export", str(source), "--output_dir", str(out)],
                   what=f"plmkit veco export {source}")
    return out


# -- the bag-of-tokens reference (in a subprocess: `multilingual.py --bag_of_tokens SPEC`) ---------------------------
def bag_of_tokens(spec: dict) -> dict:
    """A linear classifier on the mean one-hot of each text's tokens (`EmbeddingBag` to the labels, plus a bias),
    full-batch Adam (lr 0.05, `epochs`) on the training file; accuracy per language on the test files."""
    import time

    import torch
    from transformers import AutoTokenizer

    start = time.process_time()
    torch.manual_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["backbone"])

    def read(path: str) -> tuple[tuple[torch.Tensor, torch.Tensor], list[str]]:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
        ids = [tokenizer(r["text"], truncation=True, max_length=spec["max_length"])["input_ids"] for r in rows]
        offsets = torch.tensor([0, *(len(x) for x in ids[:-1])]).cumsum(0)
        return (torch.tensor([t for x in ids for t in x]), offsets), [r["label"] for r in rows]

    bags, labels = read(spec["files"]["train"])
    names = sorted(set(labels))
    target = torch.tensor([names.index(y) for y in labels])
    model = torch.nn.EmbeddingBag(len(tokenizer), len(names), mode="mean")
    bias = torch.nn.Parameter(torch.zeros(len(names)))
    optimizer = torch.optim.Adam([*model.parameters(), bias], lr=0.05)
    for _ in range(spec["epochs"]):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(*bags) + bias, target).backward()
        optimizer.step()
    found = {}
    with torch.no_grad():
        for lang in LANGUAGES:
            bags, labels = read(spec["files"][f"test_{lang}"])
            predicted = (model(*bags) + bias).argmax(-1).tolist()
            found[f"accuracy_{lang}"] = sum(names[i] == y for i, y in zip(predicted, labels, strict=True)) / len(labels)
    return {**found, "process_cpu_s": round(time.process_time() - start, 1)}


# -- evaluation (in a subprocess: `multilingual.py --evaluate SPEC`) -----------------------------------------------
def _compacted(run: Path, overrides: dict[str, str], out: Path):  # noqa: ANN202
    """The run exported (compacted to its kept units when pruned) and loaded back, with its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from plmkit.core.run import export_run
    from plmkit.core.sparsity import load_compacted

    export_run(run, out, overrides)
    config = json.loads((out / "config.json").read_text())
    model = (load_compacted(AutoModelForSequenceClassification, out) if "plmkit_compaction" in config
             else AutoModelForSequenceClassification.from_pretrained(out))
    return model.eval(), AutoTokenizer.from_pretrained(out)


def evaluate(spec: dict) -> dict:
    """Accuracy per language and retrieval P@1 per pair of one run (a DS run: at each of its sparsities)."""
    from plmkit.core.run import evaluate_run
    from plmkit.structured_pruning import evaluate_at
    from plmkit.veco.evaluation import retrieval_precision_at_1

    run, out = Path(spec["run"]), {}
    pairs = {}  # pair -> (sources, targets), the first `retrieval` verse pairs of its test file
    for pair in PAIRS:
        rows = [line.split("\t") for line in Path(spec["pairs"][pair]).read_text().splitlines()[1:]]
        pairs[pair] = ([r[0] for r in rows[: spec["retrieval"]]], [r[1] for r in rows[: spec["retrieval"]]])
    for sparsity in spec["sparsities"] or [None]:
        found = {}
        for lang in LANGUAGES:
            flags = ["--test_file", spec["files"][f"test_{lang}"]]
            metrics = evaluate_run(run, "test", flags) if sparsity is None else evaluate_at(run, sparsity, "test", flags)
            found[f"accuracy_{lang}"] = metrics["test_accuracy"]
        with tempfile.TemporaryDirectory() as tmp:
            encoders = {}
            for lang in LANGUAGES:  # one sub-network per language with per-language masks, else one for all
                overrides = {"sparsity": repr(sparsity)} if sparsity is not None else {}
                if spec["per_language"]:
                    overrides["export_language"] = lang
                elif encoders:
                    encoders[lang] = encoders["en"]
                    continue
                encoders[lang] = _compacted(run, overrides, Path(tmp) / lang)
            for pair, (sources, targets) in pairs.items():
                src, tgt = pair.split("-")
                (source_model, tokenizer), (target_model, _) = encoders[src], encoders[tgt]
                found[f"p_at_1_{src}_{tgt}"] = retrieval_precision_at_1(source_model, tokenizer, sources, targets,
                                                                        target_model=target_model)
        if sparsity is None:
            return found
        out[str(sparsity)] = found
    return {"by_sparsity": out}


def _in_subprocess(mode: str, spec: dict, threads: int, what: str) -> dict:
    """This script run as `multilingual.py MODE SPEC` (`--evaluate` or `--bag_of_tokens`) in a subprocess with
    `threads` torch threads; the json dict it prints last."""
    shown = run_python([__file__, mode, json.dumps(spec)], threads, what=what)
    return json.loads(shown.strip().splitlines()[-1])


# -- jobs ----------------------------------------------------------------------------------------------------------
def jobs(args: argparse.Namespace) -> list[dict]:
    """Per backbone and seed: the unpruned and DS runs, then each (algorithm, sparsity) in every pruned setting
    next to each other (so that a partial sweep already holds complete comparisons)."""
    out = []
    for backbone in args.backbone:
        for seed in args.seeds:
            base = {"backbone": backbone.split("=", 1)[0], "seed": seed}
            out += [{**base, "setting": setting, "algorithm": "-", "sparsity": 0.0}
                    for setting in args.settings if setting in ("bag_of_tokens", "dense", "dense_en", "ds")]
            out += [{**base, "setting": setting, "algorithm": a, "sparsity": x}
                    for a in args.algorithms for x in args.sparsities for setting in args.settings
                    if setting in PRUNED]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluate", help=argparse.SUPPRESS)  # the evaluation subprocess of one run
    parser.add_argument("--bag_of_tokens", help=argparse.SUPPRESS)  # the subprocess of the bag-of-tokens reference
    parser.add_argument("--data", help="the folder of `plmkit veco prepare-data` (classify/ and mt/)")
    parser.add_argument("--backbone", action="append", default=[], help="NAME=FOLDER (repeat for several)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--algorithms", nargs="+", choices=tuple(ALGORITHMS), default=list(ALGORITHMS))
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--train", type=int, default=2000, help="training verses (x3 rows in en+de+fr)")
    parser.add_argument("--test", type=int, default=1000, help="test verses per language")
    parser.add_argument("--test_books", choices=("held_out", "training"), default="training",
                        help="test on other verses of the training books (default), or on the held-out books")
    parser.add_argument("--retrieval", type=int, default=1000, help="held-out verse pairs for retrieval")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4, help="(the VECO reproduction's CPU-scale book-group lr)")
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("PLMKIT_NUM_THREADS", "1")))
    parser.add_argument("--parallel", type=int, default=1, help="jobs at a time")
    parser.add_argument("--work_dir", default="outputs/structured_pruning_multilingual")
    parser.add_argument("--json", default=str(JSON))
    add_precision_option(parser)
    args = parser.parse_args()
    if args.evaluate:
        print(json.dumps(evaluate(json.loads(args.evaluate))))
        return
    if args.bag_of_tokens:
        print(json.dumps(bag_of_tokens(json.loads(args.bag_of_tokens))))
        return
    if not args.data or not args.backbone:
        parser.error("--data and at least one --backbone NAME=FOLDER are needed")
    bad = [b for b in args.backbone if "=" not in b or not (Path(b.split("=", 1)[1]) / "config.json").exists()]
    if bad:
        parser.error(f"--backbone takes NAME=FOLDER with a model's config.json in FOLDER; not: {bad}")
    if any(not 0 < s < 1 for s in args.sparsities):
        parser.error(f"--sparsities must lie strictly between 0 and 1, got {args.sparsities}")
    work, data, precision = Path(args.work_dir), Path(args.data), resolve_precision(args.precision)
    files = write_data(data, work, args.train, args.test, args.test_books)
    pairs = {pair: str(data / "mt" / pair / "test.tsv") for pair in PAIRS}
    folders = {name: backbone_folder(name, Path(path), work)
               for name, path in (b.split("=", 1) for b in args.backbone)}

    def run_one(job: dict) -> dict:
        name = "-".join(str(job[k]) for k in ("backbone", "setting", "algorithm", "sparsity", "seed"))
        if job["setting"] == "bag_of_tokens":
            spec = {"backbone": str(folders[job["backbone"]]), "files": files, "seed": job["seed"],
                    "max_length": args.max_length, "epochs": BAG_OF_TOKENS_EPOCHS}
            return _in_subprocess("--bag_of_tokens", spec, args.threads, what=f"bag of tokens {name}")
        out = work / "runs" / name
        english = job["setting"] in ENGLISH_ONLY
        flags = ["--model_name_or_path", str(folders[job["backbone"]]),
                 "--train_file", files["train_en" if english else "train"], "--max_steps", str(args.steps),
                 "--per_device_train_batch_size", str(args.batch), "--per_device_eval_batch_size", "128",
                 "--learning_rate", str(args.lr), "--warmup_steps", "0.1", "--max_length", str(args.max_length),
                 "--seed", str(job["seed"]), "--report_to", "none", "--disable_tqdm", "true", "--save_strategy",
                 "no", "--logging_steps", "100", "--overwrite_output_dir", *precision_flags(precision)]
        if job["setting"] == "ds":
            flags += ["--method", "dynamic_sparsification"]
        elif job["setting"] not in ("dense", "dense_en"):
            flags += ["--method", "structured_pruning", *ALGORITHMS[job["algorithm"]],
                      "--method.sparsity", str(job["sparsity"])]
            if job["setting"] == "per_language":
                flags += ["--method.setting", "per_language", "--method.languages", ",".join(LANGUAGES)]
        metrics = plmkit_train(flags, out, args.threads)
        spec = {"run": str(out), "files": files, "pairs": pairs, "retrieval": args.retrieval,
                "per_language": job["setting"] == "per_language",
                "sparsities": [0.0, *args.sparsities] if job["setting"] == "ds" else None}
        found = _in_subprocess("--evaluate", spec, args.threads, what=f"evaluating {out}")
        return {**found, "process_cpu_s": metrics["process_cpu_s"],
                **{k: metrics[k] for k in ("head_sparsity", "neuron_sparsity") if k in metrics}}

    settings = {"data": str(data), "backbones": {n: str(f) for n, f in folders.items()}, "train_verses": args.train,
                "test_verses": args.test, "test_books": args.test_books, "majority": {lang: majority_share(files[f"test_{lang}"]) for lang in LANGUAGES},
                "retrieval_pairs": args.retrieval,
                "steps": args.steps, "batch": args.batch, "lr": args.lr, "max_length": args.max_length,
                "precision": precision, "threads": args.threads, "setup": __doc__.split("\n\n")[1].replace("\n", " ")}
    key = lambda r: (r["backbone"], r["seed"], r["setting"], r["algorithm"], r["sparsity"])  # noqa: E731
    run_sweep(Path(args.json), jobs(args), run_one, key=key, parallel=args.parallel, settings=settings)


if __name__ == "__main__":
    main()
