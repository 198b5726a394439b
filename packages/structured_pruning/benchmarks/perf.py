"""Size and speed of compacted models per sparsity ("a fast model is not necessarily small").

    PLMKIT_NUM_THREADS=1 .venv/bin/python packages/structured_pruning/benchmarks/perf.py

MiniLM (real weights) compacted at 0-90% of heads and FFN neurons (the same fraction in every layer): parameters,
bytes on disk, the embedding share, FLOPs per sequence, and CPU latency at batch 1 and batch 32 (sequence 128,
one thread, variants interleaved, median of repeats; process CPU time and wall time). The speed-up is compared
with the one the FLOP reduction implies. The same for an XLM-R-base-shaped model with random weights (12 layers,
hidden 768, 250k-token vocabulary): is the per-forward overhead that keeps MiniLM's batch-1 speed-up under the
FLOP-implied one smaller on a larger model, and how much of a multilingual model's bytes is the embedding matrix
(where "fast" and "small" part ways).
Writes packages/structured_pruning/benchmarks/results/structured_pruning_efficiency.json.
"""

from __future__ import annotations

import copy
import json
import os
import platform
from pathlib import Path

import torch
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

from plmkit.core.models import load_model
from plmkit.core.sparsity import compact_model, transformer_blocks, units_to_keep
from plmkit.structured_pruning import flops_per_sequence, interleaved_latency, size_report

RESULTS = Path(__file__).parent / "results" / "structured_pruning_efficiency.json"
SPARSITIES = (0.0, 0.25, 0.5, 0.75, 0.9)
SEQ_LEN = 128
REPEATS = {1: 21, 32: 5}
XLMR_REPEATS = {1: 11, 32: 3}


def compacted(model_factory, sparsity: float, seed: int = 0):
    """A model with ``sparsity`` of every layer's heads and neurons removed (random ranking: speed and size
    depend only on how many units remain)."""
    model = model_factory()
    blocks = transformer_blocks(model)
    gen = torch.Generator().manual_seed(seed)
    heads = units_to_keep(torch.rand(len(blocks), blocks[0].num_heads, generator=gen), sparsity, "layer", 1)
    neurons = units_to_keep(torch.rand(len(blocks), blocks[0].intermediate_size, generator=gen), sparsity, "layer")
    return compact_model(model, heads, neurons).eval()


def measure(model_factory, repeats: dict[int, int], measure_disk: bool = True) -> list[dict]:
    """Size, FLOPs and interleaved CPU latency of the model compacted at every sparsity (bytes counted from the
    tensors, or from a saved folder with ``measure_disk``)."""
    models = {s: compacted(model_factory, s) for s in SPARSITIES}
    sizes = {s: size_report(m, measure_disk=measure_disk) for s, m in models.items()}
    flops = {s: flops_per_sequence(m, SEQ_LEN) for s, m in models.items()}
    latency = {}
    for batch, n in repeats.items():
        ids = torch.randint(1000, 20000, (batch, SEQ_LEN))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        latency[batch] = interleaved_latency({s: (lambda m=m, x=inputs: m(**x)) for s, m in models.items()}, n)
    rows = []
    for s in SPARSITIES:
        row = {"sparsity": s, **sizes[s], "flops_per_sequence": flops[s],
               "implied_speedup": flops[0.0] / flops[s]}
        for batch in repeats:
            t = latency[batch][s]
            row[f"batch{batch}_cpu_s"], row[f"batch{batch}_wall_s"] = t["cpu"], t["wall"]
            row[f"batch{batch}_speedup_cpu"] = latency[batch][0.0]["cpu"] / t["cpu"]
            row[f"batch{batch}_speedup_wall"] = latency[batch][0.0]["wall"] / t["wall"]
            row[f"batch{batch}_speedup_vs_implied"] = row[f"batch{batch}_speedup_cpu"] / row["implied_speedup"]
        row["size_ratio"] = sizes[s]["bytes"] / sizes[0.0]["bytes"]
        rows.append(row)
    return rows


def main() -> None:
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    minilm = lambda: load_model("minilm", num_labels=2)[0]  # noqa: E731
    rows = measure(minilm, REPEATS)
    xlmr_config = XLMRobertaConfig(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                   intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1)

    def xlmr():
        torch.manual_seed(0)  # random weights: latency and size do not depend on their values
        return XLMRobertaForSequenceClassification(copy.deepcopy(xlmr_config))  # compaction edits config

    xlmr_rows = measure(xlmr, XLMR_REPEATS, measure_disk=False)
    RESULTS.write_text(json.dumps({
        "model": "minilm (all-MiniLM-L6-v2, 6 layers, 12 heads, FFN 1536)", "seq_len": SEQ_LEN, "threads": 1,
        "machine": f"{platform.processor() or platform.machine()}, shared (load average {load:.1f} at the start; "
                   "CPU time is the primary measure, variants interleaved, median)",
        "repeats": {f"batch{b}": n for b, n in REPEATS.items()}, "minilm": rows,
        "xlmr_base": {"model": "XLM-R base shape (12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 250,002), "
                               "random weights", "repeats": {f"batch{b}": n for b, n in XLMR_REPEATS.items()},
                      "rows": xlmr_rows},
        "target_speedup_vs_implied": 0.9,
    }, indent=1))
    print(json.dumps({"minilm": rows, "xlmr_base": xlmr_rows}, indent=1))


if __name__ == "__main__":
    main()
