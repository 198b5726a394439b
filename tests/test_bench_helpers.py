"""The verdict rule every README claim follows (tools/bench/readme_block.paired_verdict)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "tools" / "bench"))
from readme_block import paired_verdict  # noqa: E402


def test_supported_only_beyond_two_standard_errors():
    a = {1: 0.80, 2: 0.81, 3: 0.82}
    assert paired_verdict(a, {1: 0.78, 2: 0.79, 3: 0.80}).verdict == "supported"  # +2.0, se 0
    noisy = paired_verdict(a, {1: 0.70, 2: 0.83, 3: 0.81})  # +3.0 on average, but se 3.5
    assert noisy.verdict == "within noise" and noisy.mean_difference == pytest.approx(3.0)
    assert paired_verdict({1: 0.5, 2: 0.5}, {1: 0.6, 2: 0.61}).verdict == "contradicted"


def test_pairs_by_seed_and_refuses_a_single_seed_verdict():
    v = paired_verdict({1: 0.9, 2: 0.8, 7: 0.1}, {1: 0.8, 2: 0.7})  # seed 7 has no partner
    assert v.n == 2 and v.mean_difference == pytest.approx(10.0)
    assert "no verdict" in str(paired_verdict({1: 0.9}, {1: 0.8}))
    with pytest.raises(ValueError, match="no seed"):
        paired_verdict({1: 0.9}, {2: 0.8})
