"""What a Dynamic Sparsification training step costs against a plain fine-tuning step, with the sampled
sub-networks run at full width with gates or sliced to their kept units (`--method.slice_subnetworks`).

    PLMKIT_NUM_THREADS=1 .venv/bin/python packages/structured_pruning/benchmarks/ds_cost.py [--repeats 5]

MiniLM (real weights, sequence classification), a batch of 32 random sequences of 64 tokens (the reproduction's
batch and length), fp32, one thread. A step is forward, the method's extra loss terms and backward (the optimizer
update is the same for every variant and left out). DS samples min 0.0 and max 0.9 plus one sparsity of the grid
per step, as its defaults do; one measurement is 8 steps whose sampler is seeded 0-7, so every variant runs the same
sampled sparsities (listed in the json). The unit ordering is random: the cost depends only on how many units a
sub-network keeps. Variants are interleaved and repeated; the median process CPU time per step is reported.
Writes packages/structured_pruning/benchmarks/results/structured_pruning_ds_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from plmkit.core.models import load_model
from plmkit.structured_pruning import DynamicSparsificationMethod, interleaved_latency, sample_sparsities

RESULTS = Path(__file__).parent / "results" / "structured_pruning_ds_cost.json"
STEPS = 8  # per measurement, the sampler seeded 0..STEPS-1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    gen = torch.Generator().manual_seed(0)
    plain = load_model(args.model, num_labels=2)[0].train()
    vocab = plain.config.vocab_size
    ids = torch.randint(min(1000, vocab // 2), min(20000, vocab), (32, 64), generator=gen)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (32,))}

    def finetune_step() -> None:
        for _ in range(STEPS):
            plain.zero_grad()
            plain(**batch).loss.backward()

    def ds_step(slice_subnetworks: bool):
        model = load_model(args.model, num_labels=2)[0].train()
        method = DynamicSparsificationMethod(slice_subnetworks=slice_subnetworks)
        method.prepare_model(model)
        method.start(0)
        gates = method.unit_gates
        method.set_ordering(torch.rand(gates.head_mask.shape[1:], generator=gen),
                            torch.rand(gates.neuron_mask.shape[1:], generator=gen))

        def step() -> None:
            for seed in range(STEPS):
                method.generator.manual_seed(seed)
                model.zero_grad()
                outputs = model(**batch)
                terms = method.loss_terms(model, batch, outputs, None)
                (outputs.loss + sum(terms.values())).backward()

        return step

    times = interleaved_latency({"finetune": finetune_step, "ds_gated": ds_step(False), "ds_sliced": ds_step(True)},
                                args.repeats, inference=False)
    cpu = {k: v["cpu"] / STEPS for k, v in times.items()}
    config = DynamicSparsificationMethod().config
    draws = [sample_sparsities(config.grid(), config.num_sampled, torch.Generator().manual_seed(s))[2:]
             for s in range(STEPS)]
    result = {
        "model": args.model, "batch": 32, "seq_len": 64, "precision": "fp32", "threads": 1, "repeats": args.repeats,
        "machine": f"{platform.processor() or platform.machine()}, shared (load average {load:.1f} at the start; "
                   "process CPU time, variants interleaved, median)",
        "sampled_sparsities": "0.0 (the Trainer's forward), 0.9, and one of 0.1-0.8 per step (defaults)",
        "middle_sparsities_drawn": [round(d, 2) for draw in draws for d in draw],
        "step_cpu_s": cpu,
        "ds_gated_vs_finetune": cpu["ds_gated"] / cpu["finetune"],
        "ds_sliced_vs_finetune": cpu["ds_sliced"] / cpu["finetune"],
        "sliced_vs_gated": cpu["ds_sliced"] / cpu["ds_gated"],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
