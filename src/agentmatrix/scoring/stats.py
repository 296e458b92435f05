"""Intervals and exact tests for small samples (formulas in docs/metrics.md)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import TypeVar

from agentmatrix.scoring.estimates import Estimate, Rate

Sample = TypeVar("Sample")

DECIMALS = 4
# Relative tolerance when comparing hypergeometric probabilities in Fisher's test (as R does).
_FISHER_TOLERANCE = 1 + 1e-7


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, DECIMALS)


def significant(value: float, digits: int = 4) -> float:
    """`value` kept to `digits` significant digits (for p-values, which may be tiny)."""
    return float(f"{value:.{digits}g}")


def z_value(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)


def wilson_bounds(count: int, n: int, confidence: float) -> tuple[float, float]:
    if n <= 0:
        raise ValueError("the Wilson interval needs n > 0")
    if not 0 <= count <= n:
        raise ValueError(f"count {count} outside 0..{n}")
    z = z_value(confidence)
    p = count / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if count == 0 else max(0.0, centre - half)
    high = 1.0 if count == n else min(1.0, centre + half)
    return low, high


def wilson(count: int, n: int, confidence: float) -> Rate:
    """count/n with the Wilson score interval; undefined (None) when n = 0."""
    if n == 0:
        return Rate(count=0, n=0, value=None, low=None, high=None)
    low, high = wilson_bounds(count, n, confidence)
    return Rate(count=count, n=n, value=rounded(count / n), low=rounded(low), high=rounded(high))


def newcombe_difference(
    count1: int, n1: int, count2: int, n2: int, confidence: float, phi: float = 0.0
) -> Estimate:
    """p1 - p2 with Newcombe's hybrid score interval built from the two Wilson intervals.

    `phi` is the correlation of paired outcomes (Newcombe 1998, method 10 for paired data);
    0 gives the interval for independent samples (method 10 for unpaired data).
    """
    if n1 == 0 or n2 == 0:
        return Estimate(None, None, None)
    p1, p2 = count1 / n1, count2 / n2
    l1, u1 = wilson_bounds(count1, n1, confidence)
    l2, u2 = wilson_bounds(count2, n2, confidence)
    delta = p1 - p2
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return Estimate(rounded(delta), rounded(max(-1.0, delta - below)), rounded(min(1.0, delta + above)))


def paired_phi(both: int, only1: int, only2: int, neither: int) -> float:
    """The phi correlation of a paired 2x2 table; 0 when a margin is empty."""
    margins = (both + only1) * (only2 + neither) * (both + only2) * (only1 + neither)
    if margins == 0:
        return 0.0
    return (both * neither - only1 * only2) / math.sqrt(margins)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts (a binomial test at 1/2)."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / (1 << discordant))


def fisher_exact(yes_a: int, no_a: int, yes_b: int, no_b: int) -> float:
    """Two-sided Fisher exact p-value of a 2x2 table: the tables at most as likely as the observed one."""
    n_a = yes_a + no_a
    yes = yes_a + yes_b
    total = n_a + yes_b + no_b
    if total == 0:
        return 1.0

    def probability(x: int) -> float:
        return math.comb(yes, x) * math.comb(total - yes, n_a - x) / math.comb(total, n_a)

    observed = probability(yes_a)
    low, high = max(0, n_a - (total - yes)), min(yes, n_a)
    p = sum(q for q in (probability(x) for x in range(low, high + 1)) if q <= observed * _FISHER_TOLERANCE)
    return min(1.0, p)


def percentile_interval(values: Sequence[float], confidence: float) -> tuple[float, float]:
    """The (1-c)/2 and (1+c)/2 quantiles, linearly interpolated between order statistics."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    tail = (1.0 - confidence) / 2.0
    return _quantile(ordered, tail), _quantile(ordered, 1.0 - tail)


def _quantile(ordered: Sequence[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    fraction = position - below
    return ordered[below] + (ordered[above] - ordered[below]) * fraction


def resamples(n: int, samples: int, seed: int) -> list[list[int]]:
    """`samples` bootstrap resamples of the indexes 0..n-1, reproducible from `seed`."""
    rng = random.Random(seed)  # noqa: S311 - statistics, not secrets
    return [[rng.randrange(n) for _ in range(n)] for _ in range(samples)]


def bootstrap_estimate(
    point: float | None,
    statistic: Callable[[Sample], float | None],
    samples: Sequence[Sample],
    confidence: float,
) -> Estimate:
    """A point estimate with the percentile interval of `statistic` over the resamples."""
    if point is None:
        return Estimate(None, None, None)
    values = [value for value in (statistic(sample) for sample in samples) if value is not None]
    if not values:
        return Estimate(rounded(point), None, None)
    low, high = percentile_interval(values, confidence)
    return Estimate(rounded(point), rounded(low), rounded(high))
