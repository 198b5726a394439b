"""The core Trainer's training step vs a plain PyTorch loop: same model, batches, optimizer and clipping.

Both variants run the real MiniLM on fixed-length rt-polarity batches with one torch thread. They alternate
round by round (interleaved, so machine noise hits both alike); each round times every optimizer step
(process CPU time and wall time, from one step's end to the next, data loading included) and drops the first
two. The ratio reported is median(Trainer step) / median(plain step). Target: <= 1.10.

    .venv/bin/python packages/core/benchmarks/perf_trainer_step.py   ->  packages/core/benchmarks/results/trainer_step.json
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, TrainerCallback, TrainingArguments

from plmkit.core.data import encode, load_builtin
from plmkit.core.models import load_model
from plmkit.core.training import Trainer

ROUNDS, STEPS, WARMUP, BATCH, LENGTH = 5, 12, 2, 16, 64
OUT = Path(__file__).parent / "results" / "trainer_step.json"


class _StepClock(TrainerCallback):
    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self.marks = [(time.process_time(), time.perf_counter())]

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.marks.append((time.process_time(), time.perf_counter()))


def _durations(marks: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    cpu = [b[0] - a[0] for a, b in zip(marks, marks[1:], strict=False)][WARMUP:]
    wall = [b[1] - a[1] for a, b in zip(marks, marks[1:], strict=False)][WARMUP:]
    return cpu, wall


def main() -> None:
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    task = load_builtin("rt-polarity")
    task.splits["train"] = task.splits["train"].select(range(BATCH * STEPS))
    _, tokenizer = load_model("minilm", num_labels=2)
    train = encode(task, tokenizer, LENGTH)["train"]
    collator = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=LENGTH)
    args = TrainingArguments(
        output_dir="/tmp/plmkit-bench-trainer", max_steps=STEPS, per_device_train_batch_size=BATCH,
        learning_rate=5e-5, weight_decay=0.01, max_grad_norm=1.0, report_to=[], save_strategy="no",
        logging_strategy="no", use_cpu=True, dataloader_pin_memory=False, disable_tqdm=True,
        train_sampling_strategy="sequential",
    )
    samples: dict[str, dict[str, list[float]]] = {v: {"cpu": [], "wall": []} for v in ("trainer", "plain")}

    for _ in range(ROUNDS):
        # Trainer
        model, _ = load_model("minilm", num_labels=2, seed=0)
        clock = _StepClock()
        trainer = Trainer(model, args, train_dataset=train, data_collator=collator, callbacks=[clock])
        trainer.train()
        cpu, wall = _durations(clock.marks)
        samples["trainer"]["cpu"] += cpu
        samples["trainer"]["wall"] += wall

        # Plain loop: the optimizer class and kwargs the Trainer chose, same clipping, same batches.
        model, _ = load_model("minilm", num_labels=2, seed=0)
        model.train()
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        optimizer = optimizer_cls(model.parameters(), **{**optimizer_kwargs, "weight_decay": args.weight_decay})
        loader = DataLoader(train.with_format("torch"), batch_size=BATCH, collate_fn=collator)
        marks = [(time.process_time(), time.perf_counter())]
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            marks.append((time.process_time(), time.perf_counter()))
        cpu, wall = _durations(marks)
        samples["plain"]["cpu"] += cpu
        samples["plain"]["wall"] += wall

    med = {v: {k: statistics.median(x) for k, x in s.items()} for v, s in samples.items()}
    ratio_cpu = med["trainer"]["cpu"] / med["plain"]["cpu"]
    ratio_wall = med["trainer"]["wall"] / med["plain"]["wall"]
    result = {
        "what": "plmkit.core Trainer training step vs plain PyTorch loop (MiniLM, fp32, CPU, 1 thread)",
        "batch": BATCH, "length": LENGTH, "rounds": ROUNDS, "steps_per_round": STEPS, "warmup_steps_dropped": WARMUP,
        "torch": torch.__version__, "transformers": transformers.__version__, "machine": platform.machine(),
        "median_step_s": med, "ratio_cpu": ratio_cpu, "ratio_wall": ratio_wall,
        "target": 1.10, "met": ratio_cpu <= 1.10,
        "samples": samples,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(f"trainer/plain step: cpu {ratio_cpu:.3f}x, wall {ratio_wall:.3f}x (target <= 1.10) -> {OUT}")


if __name__ == "__main__":
    main()
