"""Statistics over training seeds: the spread that says whether a difference is real.

`seed_summary` gives mean, sample std and a 95 % Student-t interval of one configuration's
values over its training seeds. `paired` compares two configurations run with the same seeds:
the per-seed difference's mean and 95 % t-interval, and a plain verdict that takes the
metric's direction into account. n = 1 gives no interval and no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

CONFIDENCE = 0.95


def _t_half_width(std: float, n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)


@dataclass(frozen=True)
class SeedSummary:
    """n values of one configuration (one per training seed)."""

    n: int
    mean: float
    std: float | None  # sample std (ddof=1); None for n = 1
    ci_low: float | None
    ci_high: float | None

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, scale: float = 1.0, digits: int = 2, with_n: bool = False) -> str:
        """`"98.20 ± 0.30 [97.46, 98.94]"`: mean ± std [95 % interval] (`with_n`: then `" n=3"`);
        one seed shows the mean alone, claiming no spread."""
        n = f" n={self.n}" if with_n else ""
        if self.std is None:
            return f"{self.mean * scale:.{digits}f}" + (" (n=1)" if with_n else "")
        return (f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f} "
                f"[{self.ci_low * scale:.{digits}f}, {self.ci_high * scale:.{digits}f}]{n}")


def seed_summary(values: Sequence[float]) -> SeedSummary:
    """Mean, sample std and 95 % t-interval of the mean.

    >>> s = seed_summary([1.0, 2.0, 3.0])
    >>> s.mean, s.std, round(s.ci_low, 4), round(s.ci_high, 4)
    (2.0, 1.0, -0.4841, 4.4841)
    """
    n = len(values)
    if n == 0:
        raise ValueError("seed_summary needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return SeedSummary(1, mean, None, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = _t_half_width(std, n)
    return SeedSummary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class PairedComparison:
    """B − A per shared seed: its summary and what it means for a metric with this direction."""

    seeds: tuple[int, ...]
    difference: SeedSummary
    higher_is_better: bool
    verdict: str  # "better", "worse", "no detectable difference at n = 3", "one seed: no verdict"

    def to_dict(self) -> dict:
        return {"seeds": list(self.seeds), "difference": self.difference.to_dict(),
                "higher_is_better": self.higher_is_better, "verdict": self.verdict}


def paired(a: Mapping[int, float], b: Mapping[int, float], higher_is_better: bool = True) -> PairedComparison:
    """Compare B with A on the seeds both have: mean and 95 % t-interval of (B − A); the verdict
    says "better" or "worse" (for B) only when the interval excludes 0.

    >>> c = paired({0: 0.90, 1: 0.91, 2: 0.92}, {0: 0.92, 1: 0.93, 2: 0.95})
    >>> round(c.difference.mean, 4), c.verdict
    (0.0233, 'better')
    >>> paired({0: 1.0, 1: 2.0}, {0: 1.5, 1: 1.6}).verdict
    'no detectable difference at n = 2'
    """
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        raise ValueError("the two groups share no training seed; a paired comparison needs the same seeds")
    diff = seed_summary([b[s] - a[s] for s in seeds])
    if diff.std is None:
        verdict = "one seed: no verdict"
    elif diff.ci_low > 0 or diff.ci_high < 0:
        up = diff.ci_low > 0
        verdict = "better" if up == higher_is_better else "worse"
    else:
        verdict = f"no detectable difference at n = {diff.n}"
    return PairedComparison(seeds, diff, higher_is_better, verdict)
