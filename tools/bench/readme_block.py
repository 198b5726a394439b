"""Rendering results into READMEs: one generated block between two marker lines, never typed by hand; the
mean +- std (sample standard deviation) the tables computed from raw runs report; and the verdict rule every
claim in a README follows (`paired_verdict`)."""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Verdict", "mean_std", "paired_verdict", "render_cli", "replace_block"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) over seeds."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class Verdict:
    """A claim "A beats B" judged from paired runs (same seed, same data): mean difference and its standard error."""

    n: int
    mean_difference: float
    standard_error: float
    verdict: str

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean_difference:+.1f} (1 seed: no verdict)"
        return f"{self.mean_difference:+.1f} +- {self.standard_error:.1f} ({self.n} seeds): {self.verdict}"


def paired_verdict(a: Mapping[object, float], b: Mapping[object, float], scale: float = 100.0) -> Verdict:
    """Judge "a > b" over the seeds both were run with. Supported only when the mean paired difference exceeds twice
    its standard error (sample std / sqrt(n)); "contradicted" when it is below minus twice; otherwise "within noise".
    Values are multiplied by `scale` (accuracies in [0, 1] become points)."""
    seeds = sorted(set(a) & set(b), key=str)
    diffs = [scale * (a[s] - b[s]) for s in seeds]
    if not diffs:
        raise ValueError("no seed was run for both sides of the comparison")
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return Verdict(1, mean, math.nan, "no verdict")
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    verdict = "supported" if mean > 2 * se else "contradicted" if mean < -2 * se else "within noise"
    return Verdict(len(diffs), mean, se, verdict)


def replace_block(readme: Path, start: str, end: str, body: str, check: bool = False) -> bool:
    """Put `body` between the `start` and `end` markers of `readme`; return True when the file was out of date.

    With `check`, nothing is written (for tests that the README matches its json files).
    """
    text = readme.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{readme} has no {start} ... {end} block")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    updated = f"{head}{start}\n{body}\n{end}{tail}"
    if not check and updated != text:
        readme.write_text(updated)
    return updated != text


def render_cli(readme: Path, start: str, end: str, render: Callable[[], str], plot: Callable[[], None] | None = None) -> None:
    """The command line of every render script: write the block (and the plot), or with ``--check`` only exit
    non-zero when the README does not match its json files."""
    check = "--check" in sys.argv[1:]
    stale = replace_block(readme, start, end, render(), check=check)
    if check:
        if stale:
            sys.exit(f"{readme} is out of date: run {Path(sys.argv[0]).name}")
        return
    if plot is not None:
        plot()
