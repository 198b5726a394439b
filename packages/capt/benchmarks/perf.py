"""Cost of a CAPT step against an MLM step, all-MiniLM-L6-v2 with a masked-LM head, sequences of 128 tokens.

The MLM step is the core's masked_lm step: the model's forward with only the masked positions sent through the
MLM head (`plmkit.core.tasks.masked_lm.masked_lm_forward`), cross-entropy, backward, AdamW. The CAPT step adds what
`CAPTMethod` adds in a run: recovering the clean view, the clean view's extra encoder forward (inside the same model
forward, through the method's hook), the projection head and NT-Xent over the 2N views, and their backward; with
`stop_gradient_clean` the clean forward runs without gradient. Targets: CAPT <= 2.0x, CAPT with stop-gradient
<= 1.4x. Same batches (BERT's 80/10/10 masking of 15% of random tokens) for every variant; one torch thread; the
variants interleaved within each round (order rotated); medians of the per-round ratios of process CPU time (user +
system), of user time alone, and of wall time. Writes packages/capt/benchmarks/results/capt_perf.json.

glibc's malloc adapts its mmap and trim thresholds as a run goes, and a step with a larger peak (CAPT keeps the
activations of two views) then pays page faults for memory it returns to the system and takes back every step: up
to 1.8 s of system time per CAPT step against 0.15 s for the MLM step, measured on MiniLM. The script therefore
re-runs itself with both thresholds fixed (GLIBC_TUNABLES, recorded in the json), as a caching allocator (jemalloc,
tcmalloc) would behave; `--default_malloc` measures with glibc's defaults instead.

    PLMKIT_NUM_THREADS=1 .venv/bin/python packages/capt/benchmarks/perf.py [--rounds 5] [--steps 2] [--batch 16]
    .venv/bin/python packages/capt/benchmarks/perf.py --smoke     # tiny-bert, 2 rounds: checks that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from plmkit.capt import CAPTMethod
from plmkit.core.losses import mask_tokens
from plmkit.core.models import load_model
from plmkit.core.tasks.masked_lm import masked_lm_forward

OUT = Path(__file__).parent / "results" / "capt_perf.json"
TARGETS = {"capt": 2.0, "capt_stop_gradient": 1.4}
FIXED_MALLOC = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def _timed(fn: Callable[[], None]) -> tuple[float, float, float]:
    """(CPU = user + system, user, wall) seconds of `fn`."""
    start, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    fn()
    end = resource.getrusage(resource.RUSAGE_SELF)
    user = end.ru_utime - start.ru_utime
    return user + end.ru_stime - start.ru_stime, user, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="training steps per variant and round")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--smoke", action="store_true", help="tiny-bert, 2 rounds of 1 step, no json written")
    parser.add_argument("--default_malloc", action="store_true", help="keep glibc's adaptive malloc thresholds")
    args = parser.parse_args()
    if not args.default_malloc and "GLIBC_TUNABLES" not in os.environ and platform.system() == "Linux":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": FIXED_MALLOC})
    model_name = "tiny-bert" if args.smoke else "minilm"
    if args.smoke:
        args.rounds, args.steps = 2, 1
    torch.set_num_threads(1)
    torch.manual_seed(0)

    variants: dict[str, CAPTMethod | None] = {
        "mlm": None, "capt": CAPTMethod(), "capt_stop_gradient": CAPTMethod(stop_gradient_clean=True)}
    models, optimizers = {}, {}
    for name, method in variants.items():  # one model and optimizer per variant, the same initial weights
        model, tokenizer = load_model(model_name, kind="masked-lm", seed=0)
        if method is not None:
            method.prepare_model(model, None)
        models[name] = model.train()
        optimizers[name] = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)

    vocab = len(tokenizer)
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.steps):
        ids = torch.randint(min(1000, vocab // 4), vocab, (args.batch, args.length), generator=gen)
        ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
        maskable = torch.ones_like(ids, dtype=torch.bool)
        maskable[:, [0, -1]] = False
        corrupted, labels = mask_tokens(ids, maskable, tokenizer.mask_token_id, vocab, 0.15, generator=gen)
        batches.append({"input_ids": corrupted, "attention_mask": torch.ones_like(ids), "labels": labels})

    def step(name: str, batch: dict) -> None:
        model, method, optimizer = models[name], variants[name], optimizers[name]
        if method is not None:
            batch = method.prepare_batch(dict(batch))
        logits, targets, _ = masked_lm_forward(model, batch)
        loss = F.cross_entropy(logits.float(), targets)
        if method is not None:
            loss = loss + method.loss_terms(model, batch, None)["capt"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def run(name: str) -> Callable[[], None]:
        return lambda: [step(name, b) for b in batches]

    for name in variants:  # warm-up: allocations, AdamW state
        run(name)()
    names = list(variants)
    kinds = ("cpu", "user", "wall")
    ratios: dict[str, dict[str, list[float]]] = {k: {n: [] for n in names if n != "mlm"} for k in kinds}
    raw = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        timings = {name: _timed(run(name)) for name in order}
        for i, kind in enumerate(kinds):
            for name in ratios[kind]:
                ratios[kind][name].append(timings[name][i] / timings["mlm"][i])
        raw.append({k: {f"{kind}_s": round(v[i], 3) for i, kind in enumerate(kinds)} for k, v in timings.items()})
        print(f"round {r}: " + ", ".join(f"{k} {v[0]:.2f}s" for k, v in timings.items()), flush=True)

    result = {
        "what": __doc__.splitlines()[0],
        "model": f"{model_name} with a masked-LM head, batch {args.batch} x {args.length} tokens, fp32, AdamW, 1 thread",
        **{f"ratio_{kind}_median": {n: round(statistics.median(v), 4) for n, v in ratios[kind].items()}
           for kind in kinds},
        "mlm_step_cpu_s_median": round(statistics.median(t["mlm"]["cpu_s"] for t in raw) / args.steps, 3),
        "targets": TARGETS,
        "malloc": os.environ.get("GLIBC_TUNABLES", "glibc defaults"),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "rounds": args.rounds, "steps_per_round": args.steps,
        "torch": torch.__version__, "machine": platform.machine(), "raw": raw,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, indent=2))
    if not args.smoke:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
