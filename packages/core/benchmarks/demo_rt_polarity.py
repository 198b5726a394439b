"""Record what `make demo` achieves: run its config and write test metrics and wall time to a results file.

    .venv/bin/python packages/core/benchmarks/demo_rt_polarity.py  ->  packages/core/benchmarks/results/demo_rt_polarity.json
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from plmkit.core.config import parse_experiment
from plmkit.core.run import train

CONFIG = Path(__file__).resolve().parents[3] / "packages" / "core" / "configs" / "demo_rt_polarity.yaml"
OUT = Path(__file__).parent / "results" / "demo_rt_polarity.json"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        metrics = train(parse_experiment([str(CONFIG), "--output_dir", tmp, "--disable_tqdm", "true"]))
        seconds = time.perf_counter() - start
    result = {
        "what": "make demo: minilm fine-tuned on rt-polarity with packages/core/configs/demo_rt_polarity.yaml",
        "test_accuracy": metrics["test_accuracy"],
        "eval_accuracy": metrics["eval_accuracy"],
        "train_seconds_wall": seconds,
        "threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
