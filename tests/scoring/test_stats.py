"""Intervals and exact tests against hand-computed and published values."""

from __future__ import annotations

import math

import pytest

from agentmatrix.scoring.stats import (
    bootstrap_estimate,
    fisher_exact,
    mcnemar_exact,
    newcombe_difference,
    paired_phi,
    percentile_interval,
    resamples,
    wilson,
    wilson_bounds,
    z_value,
)

Z = 1.959963984540054  # the 97.5% normal quantile


def test_z_value() -> None:
    assert z_value(0.95) == pytest.approx(Z)
    with pytest.raises(ValueError):
        z_value(1.0)


def test_wilson_edges_have_closed_forms() -> None:
    # k = 0: [0, z^2/(n+z^2)] = [0, 3.841459/13.841459] = [0, 0.27753]
    assert wilson_bounds(0, 10, 0.95) == pytest.approx((0.0, Z**2 / (10 + Z**2)))
    assert wilson_bounds(0, 10, 0.95)[1] == pytest.approx(0.27753, abs=1e-5)
    # k = n: [n/(n+z^2), 1] = [10/13.841459, 1] = [0.72247, 1]
    assert wilson_bounds(10, 10, 0.95) == pytest.approx((10 / (10 + Z**2), 1.0))


def test_wilson_half() -> None:
    # 5/10: centre 0.5, half = z/(1+z^2/10) * sqrt(0.25/10 + z^2/400) = 1.4160090 * 0.1860204 = 0.263407
    half = Z / (1 + Z**2 / 10) * math.sqrt(0.025 + Z**2 / 400)
    assert half == pytest.approx(0.263407, abs=1e-6)
    assert wilson_bounds(5, 10, 0.95) == pytest.approx((0.5 - half, 0.5 + half))


def test_wilson_rate_rounds_and_handles_no_trials() -> None:
    rate = wilson(3, 4, 0.95)
    # p = 0.75, n = 4: centre = (0.75 + z^2/8)/(1 + z^2/4) = 1.230182/1.960365 = 0.627527
    # half = z/1.960365 * sqrt(0.1875/4 + z^2/64) = 0.999795 * 0.326953 = 0.326886
    assert (rate.value, rate.low, rate.high) == (0.75, 0.3006, 0.9544)
    empty = wilson(0, 0, 0.95)
    assert (empty.value, empty.low, empty.high, empty.n) == (None, None, None, 0)


def test_newcombe_unpaired_matches_the_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, example 56/70 - 48/80: method 10 gives 0.0524 to 0.3339
    diff = newcombe_difference(56, 70, 48, 80, 0.95)
    assert diff.value == pytest.approx(0.2)
    assert diff.low == pytest.approx(0.0524, abs=1e-4)
    assert diff.high == pytest.approx(0.3339, abs=1e-4)


def test_newcombe_by_hand_for_one_in_ten_against_ten_in_ten() -> None:
    # p1 = 0.1, Wilson(1,10) = (0.017875, 0.404150); p2 = 1.0, Wilson(10,10) = (0.722467, 1)
    # low  = -0.9 - sqrt((0.1-0.017875)^2 + (1-1)^2)            = -0.9 - 0.082125 = -0.982125
    # high = -0.9 + sqrt((0.404150-0.1)^2 + (1-0.722467)^2)     = -0.9 + 0.411731 = -0.488269
    diff = newcombe_difference(1, 10, 10, 10, 0.95)
    assert (diff.value, diff.low, diff.high) == (-0.9, -0.9821, -0.4883)


def test_newcombe_paired_correlation_narrows_the_interval() -> None:
    # 10 pairs: 4 both, 3 only arm 1, 1 only arm 2, 2 neither; p1 = 0.7, p2 = 0.5
    phi = paired_phi(4, 3, 1, 2)
    # phi = (4*2 - 3*1)/sqrt(7*3*5*5) = 5/sqrt(525) = 0.218218
    assert phi == pytest.approx(5 / math.sqrt(525))
    paired = newcombe_difference(7, 10, 5, 10, 0.95, phi)
    unpaired = newcombe_difference(7, 10, 5, 10, 0.95)
    l1, u1 = wilson_bounds(7, 10, 0.95)
    l2, u2 = wilson_bounds(5, 10, 0.95)
    low = 0.2 - math.sqrt((0.7 - l1) ** 2 - 2 * phi * (0.7 - l1) * (u2 - 0.5) + (u2 - 0.5) ** 2)
    high = 0.2 + math.sqrt((u1 - 0.7) ** 2 - 2 * phi * (u1 - 0.7) * (0.5 - l2) + (0.5 - l2) ** 2)
    assert (paired.low, paired.high) == (round(low, 4), round(high, 4))
    assert unpaired.low is not None and unpaired.high is not None and paired.low is not None
    assert paired.high is not None
    assert paired.high - paired.low < unpaired.high - unpaired.low
    assert paired_phi(1, 0, 9, 0) == 0.0  # an empty margin


def test_mcnemar_exact() -> None:
    assert mcnemar_exact(9, 0) == pytest.approx(2 * 0.5**9)  # 0.00390625
    # b = 1, c = 5: 2 * (C(6,0) + C(6,1)) / 2^6 = 2 * 7/64 = 0.21875
    assert mcnemar_exact(1, 5) == pytest.approx(0.21875)
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0


def test_fisher_exact() -> None:
    # 3/4 vs 1/4: P(x) = C(4,x)^2/70 -> 1,16,36,16,1 over 70; P(3) = 16/70; p = (1+16+16+1)/70
    assert fisher_exact(3, 1, 1, 3) == pytest.approx(34 / 70)
    # 10/10 vs 0/10: only the two extreme tables, each 1/C(20,10): p = 2/184756
    assert fisher_exact(10, 0, 0, 10) == pytest.approx(2 / 184756)
    assert fisher_exact(5, 5, 5, 5) == pytest.approx(1.0)


def test_percentile_interval_interpolates() -> None:
    # values 0..100: the 2.5% and 97.5% quantiles are 2.5 and 97.5
    assert percentile_interval([float(v) for v in range(101)], 0.95) == pytest.approx((2.5, 97.5))


def test_bootstrap_is_reproducible_and_degenerate_for_constant_data() -> None:
    assert resamples(5, 3, seed=1) == resamples(5, 3, seed=1)
    assert resamples(5, 50, seed=1) != resamples(5, 50, seed=2)
    values = [4.0, 4.0, 4.0]
    estimate = bootstrap_estimate(
        4.0, lambda s: sum(values[i] for i in s) / len(s), resamples(3, 200, 0), 0.95
    )
    assert (estimate.value, estimate.low, estimate.high) == (4.0, 4.0, 4.0)
