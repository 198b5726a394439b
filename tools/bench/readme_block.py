"""Rendering results into READMEs: one generated block between two marker lines, never typed by hand; and the
mean +- std (sample standard deviation) the tables computed from raw runs report."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["mean_std", "render_cli", "replace_block"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) over seeds."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


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
