"""PST vs dense full fine-tuning on MiniLM: step time, optimizer state and peak memory, side by side.

One training step = forward + backward + AdamW step + zero_grad on a batch of 32 x 64 random tokens (fp32,
one torch thread). PST runs at 90% sparsity with the reference's settings (r1 = r2 = 8, head frozen).
- time: the variants are interleaved, each repeated; the ratio of median process CPU seconds per step (and of
  wall seconds, noisier on this shared machine);
- optimizer state: bytes of every tensor in ``optimizer.state`` after one step;
- peak memory: each variant in a fresh process, the peak resident set size sampled every millisecond during
  three steps, minus the RSS just before the first step (model loaded, optimizer built).

    python packages/pst/benchmarks/perf.py   ->  packages/pst/benchmarks/results/pst_perf.json
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results" / "pst_perf.json"
BATCH, LENGTH, REPEATS, STEPS_PER_REPEAT = 32, 64, 5, 1


def build(variant: str):
    from plmkit.core.models import load_model
    from plmkit.pst import PSTMethod

    torch.manual_seed(0)
    model, _ = load_model("minilm", num_labels=2)
    if variant == "pst":
        model = PSTMethod(sparsity=0.9).prepare_model(model)
        from plmkit.core.sparsity import set_sparsity

        set_sparsity(model, 0.9)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batch = {"input_ids": torch.randint(1000, 30000, (BATCH, LENGTH)), "labels": torch.randint(0, 2, (BATCH,))}
    return model.train(), optimizer, batch


def step(model, optimizer, batch) -> None:
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def state_bytes(optimizer) -> int:
    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))


def rss_kib() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() // 1024


def memory_child(variant: str) -> None:
    torch.set_num_threads(1)
    model, optimizer, batch = build(variant)
    before = rss_kib()
    # ru_maxrss would include the model-loading peak; sample the RSS while the steps run instead.
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    for _ in range(3):
        step(model, optimizer, batch)
    done.set()
    sampler.join()
    print(json.dumps({"rss_before_kib": before, "peak_rss_kib": peak[0], "peak_delta_kib": peak[0] - before}))


def main() -> None:
    torch.set_num_threads(1)
    variants = {name: build(name) for name in ("dense", "pst")}
    for model, optimizer, batch in variants.values():
        step(model, optimizer, batch)  # warm-up; creates the optimizer state
    cpu: dict[str, list[float]] = {n: [] for n in variants}
    wall: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(REPEATS):
        for name, (model, optimizer, batch) in variants.items():
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(STEPS_PER_REPEAT):
                step(model, optimizer, batch)
            cpu[name].append((time.process_time() - c0) / STEPS_PER_REPEAT)
            wall[name].append((time.perf_counter() - w0) / STEPS_PER_REPEAT)
    opt = {n: state_bytes(v[1]) for n, v in variants.items()}
    memory = {}
    for name in variants:
        proc = subprocess.run([sys.executable, __file__, "--memory", name], capture_output=True, text=True, check=True)
        memory[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    med = {n: statistics.median(cpu[n]) for n in cpu}
    medw = {n: statistics.median(wall[n]) for n in wall}
    result = {
        "setup": f"MiniLM (22.7M), batch {BATCH} x {LENGTH} tokens, fp32, 1 thread, AdamW; PST at 90% sparsity, "
                 f"r1 = r2 = 8; {REPEATS} interleaved repeats of {STEPS_PER_REPEAT} steps",
        "step_cpu_s": med, "step_wall_s": medw,
        "step_cpu_ratio_pst_over_dense": med["pst"] / med["dense"],
        "step_wall_ratio_pst_over_dense": medw["pst"] / medw["dense"],
        "optimizer_state_bytes": opt,
        "optimizer_state_ratio_pst_over_dense": opt["pst"] / opt["dense"],
        "memory": memory,
        "peak_rss_delta_ratio_pst_over_dense": memory["pst"]["peak_delta_kib"] / memory["dense"]["peak_delta_kib"],
        "peak_rss_ratio_pst_over_dense": memory["pst"]["peak_rss_kib"] / memory["dense"]["peak_rss_kib"],
        "targets": {"step": "<= 1.25", "optimizer_state": "<= 0.03", "peak_memory": "<= 1.0"},
    }
    OUT.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory":
        memory_child(sys.argv[2])
    else:
        main()
