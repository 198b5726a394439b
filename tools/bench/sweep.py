"""Resumable hyper-parameter sweeps: a list of jobs (dicts), one function that runs a job, one json file.

    from sweep import plmkit_train, run_sweep      # with tools/bench on sys.path, as the benchmark scripts do

    def run_one(job):                               # {"lr": 2e-4, "seed": 13} -> what to record
        with tempfile.TemporaryDirectory() as tmp:
            m = plmkit_train(["--data", "trec", "--learning_rate", str(job["lr"]), "--seed", str(job["seed"])],
                             Path(tmp) / "run")
        return {"test_accuracy": m["test_accuracy"], "cpu_s": m["process_cpu_s"]}

    run_sweep(JSON, jobs, run_one, key=lambda r: (r["lr"], r["seed"]), parallel=2)

The json holds `{"settings": ..., "runs": [job fields + run_one's result, ...]}`. It is rewritten (atomically)
after every finished job, and jobs whose key is already in its "runs" are skipped, so an interrupted sweep resumes
where it stopped. A job that fails is not recorded (the others go on); `run_sweep` raises at the end, listing the
failures, and a rerun retries them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

__all__ = ["SweepError", "add_precision_option", "logged_curve", "logged_losses", "majority_share", "plmkit_train",
           "precision_flags", "resolve_precision", "run_python", "run_sweep", "thread_env"]


class SweepError(RuntimeError):
    """One or more jobs of a sweep (or one training subprocess) failed."""


def write_json(path: Path, data: dict) -> None:
    """`data` written to `path` atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def run_sweep(
    json_path: Path,
    jobs: list[dict],
    run_one: Callable[[dict], dict],
    key: Callable[[dict], tuple],
    parallel: int = 1,
    settings: dict | None = None,
) -> dict:
    """Run every job whose `key` is not yet in `json_path`'s "runs", `parallel` at a time (threads: `run_one` is
    expected to wait on a subprocess), appending `{**job, **run_one(job)}` and rewriting the json after each.
    `key` is applied to jobs and to recorded runs alike (so it reads job fields only). `settings`, when given,
    replaces the json's "settings". Returns the json's content; raises `SweepError` after the last job if any
    failed."""
    json_path = Path(json_path)
    data = json.loads(json_path.read_text()) if json_path.exists() else {"runs": []}
    if settings is not None:
        data["settings"] = settings
    done = {key(r) for r in data["runs"]}
    todo = [j for j in jobs if key(j) not in done]
    lock = threading.Lock()
    failures: list[str] = []
    print(f"[sweep] {json_path.name}: {len(jobs) - len(todo)} of {len(jobs)} jobs already done, {len(todo)} to run",
          flush=True)
    with lock:
        write_json(json_path, data)

    def one(job: dict) -> None:
        start = time.perf_counter()
        result = run_one(job)
        with lock:
            data["runs"].append({**job, **result})
            write_json(json_path, data)
            n = len(data["runs"])
        print(f"[sweep] {key(job)} done in {time.perf_counter() - start:.0f} s ({n} recorded)", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {pool.submit(one, job): job for job in todo}
        for future in as_completed(futures):
            err = future.exception()
            if err is not None:
                failures.append(f"{key(futures[future])}: {type(err).__name__}: {err}")
                print(f"[sweep] FAILED {failures[-1]}", file=sys.stderr, flush=True)
    if failures:
        raise SweepError(f"{len(failures)} job(s) failed (rerun to retry them):\n" + "\n".join(failures))
    return data


def precision_flags(precision: str) -> list[str]:
    """`plmkit train` flags of a precision: "bf16" (bf16 autocast) or "fp32" (none)."""
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be bf16 or fp32, got {precision!r}")
    return ["--bf16", "true"] if precision == "bf16" else []


def add_precision_option(parser: Any) -> None:
    """`--precision {auto,bf16,fp32}` on a benchmark's argparse parser (read it with `resolve_precision`)."""
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="autocast of the runs (recorded with them); auto: bf16 on a GPU or a CPU with native "
                             "bf16, else fp32")


def resolve_precision(choice: str = "auto") -> str:
    """`choice`, with "auto" made bf16 where its autocast is fast (a GPU, or a CPU with native bf16) and fp32
    elsewhere: on an AVX2-only CPU emulated bf16 is several times slower than fp32. Record it with the results: runs
    of different precisions do not pair."""
    if choice != "auto":
        return choice
    from plmkit.core.training import fast_bf16

    return "bf16" if fast_bf16() else "fp32"


def thread_env(threads: int) -> dict[str, str]:
    """This process's environment for a child limited to `threads` torch threads (PLMKIT_NUM_THREADS)."""
    return {**os.environ, "PLMKIT_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false"}


def run_python(argv: list[str], threads: int = 1, what: str | None = None) -> str:
    """`python *argv` in a subprocess with `threads` torch threads; returns its stdout. Raises `SweepError` naming
    `what` (default: the command) with the tail of its stderr when it fails."""
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=thread_env(threads))
    if proc.returncode != 0:
        raise SweepError(f"{what or ' '.join(argv[:3])} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def majority_share(path: Path, limit: int | None = None) -> float:
    """What always guessing the most frequent `label` scores on a jsonl file (its first `limit` rows)."""
    labels = Counter(json.loads(line)["label"] for line in Path(path).read_text().splitlines()[:limit])
    return max(labels.values()) / sum(labels.values())


def plmkit_train(argv: list[str], out: Path, threads: int = 1) -> dict[str, Any]:
    """`python -m plmkit.core.cli train *argv --output_dir out` in a subprocess with `threads` torch threads
    (PLMKIT_NUM_THREADS); returns its metrics.json plus `process_cpu_s`, the CPU seconds (user + system) of the
    whole subprocess: start-up, data, training and the final evaluations. Raises `SweepError` with the tail of
    the log when the run fails."""
    cmd = [sys.executable, "-m", "plmkit.core.cli", "train", *argv, "--output_dir", str(out)]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=thread_env(threads))
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage (threads may run others)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        metrics_file = Path(out) / "metrics.json"
        if proc.returncode != 0 or not metrics_file.exists():
            log.seek(0)
            tail = "\n".join(log.read().strip().splitlines()[-20:])
            raise SweepError(f"plmkit train exited with {proc.returncode} ({' '.join(cmd)}):\n{tail}")
    metrics = json.loads(metrics_file.read_text())
    metrics["process_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    return metrics


def logged_curve(run: Path, keys: tuple[str, ...], digits: int | None = None) -> list[dict[str, float]]:
    """The training log of a `plmkit train` run (trainer_state.json): every logged entry that has `keys[0]`, as its
    "step" and those of `keys` it has (rounded to `digits` when given)."""
    history = json.loads((Path(run) / "trainer_state.json").read_text())["log_history"]
    return [{"step": h["step"], **{k: h[k] if digits is None else round(h[k], digits) for k in keys if k in h}}
            for h in history if keys[0] in h]


def logged_losses(run: Path) -> dict[str, float]:
    """The first and the last training loss a `plmkit train` run logged (trainer_state.json), or {} if none."""
    losses = [h["loss"] for h in logged_curve(run, ("loss",))]
    return {"first": losses[0], "last": losses[-1]} if losses else {}
