"""Training-seed statistics against hand-computed values."""

import math

import pytest

from repeval.stats import paired, seed_summary


def test_seed_summary_is_mean_sample_std_and_a_95_percent_t_interval():
    s = seed_summary([0.90, 0.92, 0.97])
    std = math.sqrt(((0.90 - 0.93) ** 2 + (0.92 - 0.93) ** 2 + (0.97 - 0.93) ** 2) / 2)
    half = 4.302652729911275 * std / math.sqrt(3)  # t(0.975, df=2)
    assert (s.n, s.mean, s.std) == (3, pytest.approx(0.93), pytest.approx(std))
    assert (s.ci_low, s.ci_high) == (pytest.approx(0.93 - half), pytest.approx(0.93 + half))
    assert s.text(scale=100, with_n=True) == f"93.00 ± {100 * std:.2f} [{100 * (0.93 - half):.2f}, {100 * (0.93 + half):.2f}] n=3"
    one = seed_summary([0.5])
    assert (one.std, one.ci_low, one.text(with_n=True), one.text()) == (None, None, "0.50 (n=1)", "0.50")
    with pytest.raises(ValueError):
        seed_summary([])


def test_paired_verdicts_follow_the_metric_direction_and_the_interval():
    a = {0: 1.0, 1: 2.0, 2: 3.0, 9: 5.0}
    b = {0: 1.5, 1: 2.6, 2: 3.4}  # seed 9 is not shared: left out
    up = paired(a, b, higher_is_better=True)
    assert up.seeds == (0, 1, 2) and up.difference.mean == pytest.approx(0.5)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert (up.difference.ci_low, up.difference.ci_high) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    assert up.verdict == "better"
    assert paired(a, b, higher_is_better=False).verdict == "worse"  # an error that went up
    assert paired(b, a).verdict == "worse"
    assert paired({0: 1.0, 1: 2.0}, {0: 1.1, 1: 1.8}).verdict == "no detectable difference at n = 2"
    assert paired({0: 1.0}, {0: 2.0}).verdict == "one seed: no verdict"
    with pytest.raises(ValueError, match="share no training seed"):
        paired({0: 1.0}, {1: 1.0})
