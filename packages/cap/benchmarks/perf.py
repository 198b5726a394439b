"""CAP performance, ratios side by side in one process (MiniLM, batch 32 x 64 tokens, 1 torch thread):

- a CAP-m training step (forward, task loss, KD, contrastive terms against PrC + FiC + 9 SnC representations
  with 4096 extra candidates each, backward, AdamW step) vs the same movement-pruning step with the same
  distillation and no contrastive terms; interleaved, repeated, median of process CPU time (and wall time);
- bank memory per stored representation (fp16) vs fp32 storage.

Banks hold random unit vectors for 8,530 examples (the size of the builtin rt-polarity train split); the cost of
the terms does not depend on their values. Writes packages/cap/benchmarks/results/cap_perf.json.

    PLMKIT_NUM_THREADS=1 python packages/cap/benchmarks/perf.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from plmkit.cap import CAPConfig, CAPMethod
from plmkit.core.models import load_model
from plmkit.core.sparsity import masked_layers

OUT = Path(__file__).parent / "results" / "cap_perf.json"
N_EXAMPLES, BATCH, LENGTH, SNAPSHOTS = 8530, 32, 64, 9


def build(contrastive: bool, teacher: torch.nn.Module) -> tuple[torch.nn.Module, CAPMethod]:
    banks = ["pretrained", "finetuned", "snapshots"] if contrastive else ["none"]
    method = CAPMethod(CAPConfig(engine="cap-m", sparsity=0.9, unsupervised_banks=banks, supervised_banks=banks))
    model, _ = load_model("minilm", num_labels=2)
    method.prepare_model(model)
    for _, layer in masked_layers(model):
        layer.sparsity = 0.9
    method.teacher = teacher
    method.labels = torch.randint(0, 2, (N_EXAMPLES,))
    if contrastive:
        hidden = model.config.hidden_size
        for name, count in (("pretrained", 1), ("finetuned", 1), ("snapshots", SNAPSHOTS)):
            for _ in range(count):
                method.add_to_bank(None, name, F.normalize(torch.randn(N_EXAMPLES, hidden), dim=-1))
    return model.train(), method


def step(model: torch.nn.Module, method: CAPMethod, optimizer: torch.optim.Optimizer, batch: dict) -> None:
    outputs = model(**{k: v for k, v in batch.items() if k != "example_id"})
    loss = method.task_loss_weight * outputs.loss + sum(method.cap_terms(model, batch, outputs).values())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ids = torch.randint(1000, 20000, (N_EXAMPLES, LENGTH))
    teacher, _ = load_model("minilm", num_labels=2)
    teacher.eval().requires_grad_(False)
    variants = {name: build(name == "cap_m", teacher) for name in ("cap_m", "movement_kd")}
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-5) for name, (model, _) in variants.items()}
    gen = torch.Generator().manual_seed(1)
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats + 1):
        rows = torch.randint(0, N_EXAMPLES, (BATCH,), generator=gen)
        batch = {"input_ids": ids[rows], "attention_mask": torch.ones(BATCH, LENGTH, dtype=torch.long),
                 "labels": torch.randint(0, 2, (BATCH,), generator=gen), "example_id": rows}
        for name, (model, method) in variants.items():
            c0, w0 = time.process_time(), time.perf_counter()
            step(model, method, optimizers[name], batch)
            if repeat:  # the first round warms up allocators and optimizer state
                cpu[name].append(time.process_time() - c0)
                wall[name].append(time.perf_counter() - w0)
    bank = variants["cap_m"][1].banks["snapshots"]
    result = {
        "setup": f"MiniLM, batch {BATCH} x {LENGTH} tokens, 1 thread, {N_EXAMPLES} examples, PrC + FiC + "
                 f"{SNAPSHOTS} SnC, 4096 extra candidates per bank, {args.repeats} interleaved repeats (median)",
        "step_cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
        "step_wall_s": {k: statistics.median(v) for k, v in wall.items()},
        "step_cpu_ratio_cap_m_over_movement_kd": statistics.median(cpu["cap_m"]) / statistics.median(cpu["movement_kd"]),
        "step_wall_ratio_cap_m_over_movement_kd": statistics.median(wall["cap_m"]) / statistics.median(wall["movement_kd"]),
        "bank_bytes_per_representation": bank.entries[0].element_size() * bank.entries[0].numel(),
        "bank_bytes_per_representation_fp32": N_EXAMPLES * bank.hidden_size * 4,
        "bank_ratio_vs_fp32": bank.memory()["ratio_vs_fp32"],
        "bank_total_bytes": sum(b.memory()["bytes"] for b in variants["cap_m"][1].banks.values()),
        "targets": {"step_ratio": 1.5, "bank_ratio": 0.5},
    }
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
