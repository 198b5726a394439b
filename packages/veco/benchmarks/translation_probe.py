"""Does the S-stream read the translation? A probe of VECO pre-trainings (CA-MLM): on held-out translation pairs,
the S-stream's masked-token accuracy with the true paired sentence against another verse's translation.

CA-MLM can only beat MLM when cross-attention takes something from the paired sentence. Here each held-out
`parallel` pair of `--data` (`pretrain/validation.jsonl` of `plmkit veco prepare-data`) is masked once (15%, BERT's
80/10/10 rule, seeded by `--seed`) and scored twice with the same masks: once with its own translation as the
S-stream's memory, once with the translation of the next pair in the batch (the batch rolled by one). The H-stream
does not read the memory, so it scores the same both times; the S-stream's difference is what it takes from the
translation. Difference: the pooled accuracy difference (correct tokens / masked tokens, in points) with its
standard error over pairs (a ratio estimate: the pairs are the units, each weighted by its masked tokens).

    python packages/veco/benchmarks/translation_probe.py --data DATA --model NAME=FOLDER [--model ...]
        -> packages/veco/benchmarks/results/veco_translation_probe.json (one entry per NAME; earlier entries kept)
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results" / "veco_translation_probe.json"


def translation_pairs(data: Path, limit: int | None) -> list[dict]:
    path = data / "pretrain" / "validation.jsonl"
    if not path.exists():
        raise SystemExit(f"{path} is missing: --data must be a `plmkit veco prepare-data` folder")
    rows = [row for line in path.read_text().splitlines() if (row := json.loads(line))["kind"] == "parallel"]
    if not rows:
        raise SystemExit(f"{path} holds no `parallel` (translation) pairs")
    return rows[:limit]


def _difference(a: torch.Tensor, b: torch.Tensor, count: torch.Tensor) -> tuple[float, float]:
    """(pooled accuracy of a minus b, its standard error), in points; a, b: correct tokens per pair, count: masked."""
    total, d = count.sum(), (a - b).double()
    diff = float(d.sum() / total)
    n = len(d)
    se = math.sqrt(float(((d - diff * count) ** 2).sum()) * n / max(n - 1, 1)) / float(total)
    return 100 * diff, 100 * se


def probe(model, tokenizer, rows: list[dict], max_length: int = 64, batch: int = 50, seed: int = 0) -> dict:
    """H-stream and S-stream accuracy per side (x, y), with the true and with another pair's translation."""
    from plmkit.veco.modeling import term_names
    from plmkit.veco.pretrain import PairCollator

    if len(rows) < 2:
        raise ValueError("the probe needs at least 2 translation pairs (one's translation stands in for another's)")
    collator = PairCollator(tokenizer, 0.15, generator=torch.Generator().manual_seed(seed))
    features = [{"input_ids": tokenizer(r["x"], truncation=True, max_length=max_length)["input_ids"],
                 "pair_input_ids": tokenizer(r["y"], truncation=True, max_length=max_length)["input_ids"]}
                for r in rows]
    chunks = [features[start:start + batch] for start in range(0, len(features), batch)]
    if len(chunks[-1]) == 1:  # a batch of one would be its own "other" translation: fold it into the one before
        chunks[-2] += chunks.pop()
    batches = [collator(chunk) for chunk in chunks]
    names = term_names("veco")
    y_terms = [i for i, name in enumerate(names) if name.endswith("_y")]

    def score(b: dict) -> torch.Tensor:  # [rows, terms, (loss, masked, correct)]
        return model(**b, objective="veco").stats.double().view(-1, len(names), 3)

    model.eval()
    scored: dict[str, list[torch.Tensor]] = {"true": [], "other": []}
    with torch.no_grad():
        for b in batches:
            scored["true"].append(score(b))
            # row i pairs x_i with y_roll[i]; its y terms score y_roll[i] (reading x_i): put them back on row roll[i]
            roll = torch.roll(torch.arange(len(b["input_ids"])), 1)
            found = score({**b, **{k: b[k][roll] for k in ("pair_input_ids", "pair_attention_mask", "pair_targets")}})
            found[:, y_terms] = found[torch.argsort(roll)][:, y_terms]
            scored["other"].append(found)
    true, other = torch.cat(scored["true"]), torch.cat(scored["other"])  # both sides of pair i on row i
    out: dict = {"pairs": len(rows)}
    for side in ("x", "y"):
        h, s = names.index(f"mlm_{side}"), names.index(f"ca_mlm_{side}")
        count = true[:, s, 1]
        if not torch.equal(count, other[:, s, 1]):  # each pair's tokens, scored twice: the same masked tokens
            raise RuntimeError(f"the probe's two scorings of side {side} masked different tokens")
        out[side] = {
            "masked_tokens": int(count.sum()),
            "h_stream": 100 * float(true[:, h, 2].sum() / count.sum()),
            "s_stream_true": 100 * float(true[:, s, 2].sum() / count.sum()),
            "s_stream_other": 100 * float(other[:, s, 2].sum() / count.sum()),
            "true_minus_other": _difference(true[:, s, 2], other[:, s, 2], count),
        }
    return out


def pretraining_steps(folder: Path) -> int | None:
    state = folder / "trainer_state.json"
    return json.loads(state.read_text()).get("global_step") if state.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a `plmkit veco prepare-data` folder")
    parser.add_argument("--model", action="append", required=True, help="NAME=FOLDER of a VECO (CA-MLM) pre-training")
    parser.add_argument("--max_pairs", type=int, help="the first N held-out translation pairs (default: all)")
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="fixes the masks")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("PLMKIT_NUM_THREADS", "1")))

    from plmkit.core.models import register_model_types
    from plmkit.veco import VecoForPreTraining, VecoTokenizer

    register_model_types()
    rows = translation_pairs(Path(args.data), args.max_pairs)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"models": {}}
    for spec in args.model:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"--model takes NAME=FOLDER, got {spec!r}")
        folder_path = Path(folder)
        model = VecoForPreTraining.from_pretrained(folder_path).float()
        found = probe(model, VecoTokenizer.from_pretrained(folder_path), rows, args.max_length, seed=args.seed)
        results["models"][name] = {"pretraining_steps": pretraining_steps(folder_path), **found}
        print(json.dumps({name: results["models"][name]}))
    results["settings"] = {"max_length": args.max_length, "seed": args.seed, "setup": __doc__.split("\n\n")[1]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
