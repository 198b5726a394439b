"""One masked-LM training step: the `masked_lm` task's loss (logits at the masked positions only) vs transformers'
default (`BertForMaskedLM(**batch, labels=...)`: logits and softmax at every position, [B, T, V]).

The real MiniLM (fp32, CPU, one torch thread), packed blocks of 128 tokens of rt-polarity text, batches of 16, the
same masked batches (80/10/10 of 15%) for both. A step is forward + backward + `torch.optim.AdamW.step()` +
`zero_grad`. The variants alternate round by round (interleaved, the order flipped every round, so machine noise
hits both alike); every step's process CPU time and wall time are recorded, one warm-up step per variant is
dropped, and the ratio reported is median(masked-only step) / median(full step). Target: <= 0.6.

    PLMKIT_NUM_THREADS=1 .venv/bin/python packages/core/benchmarks/perf_mlm_step.py
        ->  packages/core/benchmarks/results/mlm_step.json
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers
from datasets import Dataset, DatasetDict

from plmkit.core.data import load_builtin
from plmkit.core.models import load_model
from plmkit.core.tasks.masked_lm import MaskedLMCollator, MaskedLMConfig, MaskedLMTask

ROUNDS, STEPS, BATCH, LENGTH, LINES = 5, 3, 16, 128, 600
TARGET = 0.6
OUT = Path(__file__).parent / "results" / "mlm_step.json"


def _batches(tokenizer) -> list[dict[str, torch.Tensor]]:
    task = MaskedLMTask(MaskedLMConfig(packing="blocks"))
    texts = list(load_builtin("rt-polarity").splits["train"]["text"])[:LINES]
    blocks = task.encode(DatasetDict(train=Dataset.from_dict({"text": texts})), tokenizer, LENGTH)["train"]
    full = [blocks[i] for i in range(len(blocks)) if len(blocks[i]["input_ids"]) == LENGTH]
    assert len(full) >= BATCH * STEPS, f"only {len(full)} blocks of {LENGTH} tokens"
    collate = MaskedLMCollator(tokenizer, 0.15, generator=torch.Generator().manual_seed(0))
    batches = []
    for s in range(STEPS):
        batch = collate(full[s * BATCH : (s + 1) * BATCH])
        batch.pop("example_id")
        batches.append(batch)
    return batches


def main() -> None:
    os.environ.setdefault("PLMKIT_NUM_THREADS", "1")
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    task = MaskedLMTask()
    models, optimizers = {}, {}
    for variant in ("masked", "full"):
        model, tokenizer = load_model("minilm", kind="masked-lm", seed=0)
        models[variant] = model.train()
        optimizers[variant] = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    batches = _batches(tokenizer)

    # Same loss on the same batch (before any step changes the weights; dropout off for the check only).
    for m in models.values():
        m.eval()
    with torch.no_grad():
        same = (task.compute_loss(models["masked"], batches[0])[0] - models["full"](**batches[0]).loss).abs().item()
    for m in models.values():
        m.train()

    def step(variant: str, batch: dict[str, torch.Tensor]) -> None:
        model, optimizer = models[variant], optimizers[variant]
        loss = task.compute_loss(model, batch)[0] if variant == "masked" else model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for variant in models:  # warm-up: allocator, optimizer state
        step(variant, batches[0])
    samples: dict[str, dict[str, list[float]]] = {v: {"cpu": [], "wall": []} for v in models}
    for r in range(ROUNDS):
        for variant in (("masked", "full") if r % 2 == 0 else ("full", "masked")):
            for batch in batches:
                cpu, wall = time.process_time(), time.perf_counter()
                step(variant, batch)
                samples[variant]["cpu"].append(time.process_time() - cpu)
                samples[variant]["wall"].append(time.perf_counter() - wall)

    med = {v: {k: statistics.median(x) for k, x in s.items()} for v, s in samples.items()}
    ratio_cpu = med["masked"]["cpu"] / med["full"]["cpu"]
    ratio_wall = med["masked"]["wall"] / med["full"]["wall"]
    masked_tokens = [int(b["labels"].ne(-100).sum()) for b in batches]
    result = {
        "what": "MLM training step (forward+backward+AdamW), MiniLM fp32 CPU 1 thread: plmkit masked_lm loss at masked "
                "positions only vs transformers BertForMaskedLM forward with labels (all positions scored)",
        "batch": BATCH, "length": LENGTH, "vocab": models["full"].config.vocab_size, "mlm_probability": 0.15,
        "masked_tokens_per_batch": masked_tokens, "rounds": ROUNDS, "steps_per_round": STEPS,
        "warmup_steps_dropped": 1, "threads": torch.get_num_threads(), "optimizer": "torch.optim.AdamW(lr=5e-5, wd=0.01)",
        "loss_difference_on_first_batch": same,
        "torch": torch.__version__, "transformers": transformers.__version__, "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg()[0],
        "median_step_s": med, "ratio_cpu": ratio_cpu, "ratio_wall": ratio_wall, "target": TARGET,
        "met": ratio_cpu <= TARGET, "samples": samples,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(f"masked-only / full MLM step: cpu {ratio_cpu:.3f}x, wall {ratio_wall:.3f}x (target <= {TARGET}) -> {OUT}")


if __name__ == "__main__":
    main()
