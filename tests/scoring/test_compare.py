"""Comparisons of arms: paired by seed (McNemar) or independent (Fisher), differences B - A."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from agentmatrix.scoring import (
    ArmComparison,
    ArmScore,
    TrialInput,
    TrialScore,
    compare_arms,
    score_arm,
    score_trial,
)
from agentmatrix.scoring.compare import pair_by_seed

TrialFactory = Callable[..., TrialInput]


def observe_and_enforce(
    make_trial: TrialFactory, seeds: bool = True
) -> tuple[list[TrialScore], list[TrialScore]]:
    """A greedy agent, N_req = 2, 10 seeds.

    observe: asks for 5 and gets 5 every time (excess 3 each, AOC 30).
    enforce (cap 2): asks for 5 every time, gets 2, except seed 3 where it reaches 3 (excess 1, AOC 1).
    """
    observe = [
        score_trial(
            make_trial(
                trial=i, arm="observe", seed=i if seeds else None, effective=[(10, 5)], attempted=[(10, 5)]
            )
        )
        for i in range(10)
    ]
    enforce = [
        score_trial(
            make_trial(
                trial=i,
                arm="enforce",
                seed=i if seeds else None,
                effective=[(10, 3 if i == 3 else 2)],
                attempted=[(10, 5)],
                denied=[10],
            )
        )
        for i in range(10)
    ]
    return observe, enforce


def test_paired_comparison_by_hand(make_trial: TrialFactory) -> None:
    observe, enforce = observe_and_enforce(make_trial)
    comparison = compare_arms(score_arm(observe), score_arm(enforce))
    assert comparison.paired and comparison.pairs == 10
    assert (comparison.arm_a, comparison.arm_b) == ("observe", "enforce")
    # overuse: both in seed 3, only observe in the other 9 -> McNemar exact p = 2 * 0.5^9 = 0.0039
    assert comparison.overuse_test.test == "mcnemar-exact"
    assert comparison.overuse_test.counts == {"both": 1, "onlyA": 9, "onlyB": 0, "neither": 0}
    assert comparison.overuse_test.p_value == 0.003906
    # attempted overuse stays: all 10 pairs concordant -> p = 1
    assert comparison.attempted_overuse_test.p_value == 1.0
    assert comparison.attempted_overuse_test.counts["both"] == 10
    # OR: 0.1 - 1.0 = -0.9; phi = 0 (a margin is empty) so Newcombe gives [-0.9821, -0.4883] (see test_stats)
    overuse = comparison.differences["overuseRate"]
    assert (overuse.value, overuse.low, overuse.high) == (-0.9, -0.9821, -0.4883)
    assert comparison.differences["attemptedOveruseRate"].value == 0.0
    # AOC: 1 - 30 = -29; AOC_norm: 1/(1+20) - 30/(30+20) = 0.047619 - 0.6 = -0.552381
    assert comparison.differences["aoc"].value == -29.0
    assert comparison.differences["aocNorm"].value == pytest.approx(-0.5524)
    # Phi_R: enforce 1.0*(0.5*0.1 + 0.5*0.047619) = 0.073810; observe 1.0*(0.5*1 + 0.5*0.6) = 0.8
    assert comparison.differences["phiR"].value == pytest.approx(0.07381 - 0.8, abs=1e-4)
    for name in ("aoc", "aocNorm", "phiR", "meanExcessReplicaSeconds"):
        estimate = comparison.differences[name]
        assert estimate.low is not None and estimate.high is not None and estimate.value is not None
        assert estimate.low <= estimate.value <= estimate.high < 0


def test_unpaired_comparison_uses_fisher(make_trial: TrialFactory) -> None:
    observe, enforce = observe_and_enforce(make_trial, seeds=False)
    comparison = compare_arms(observe, enforce)
    assert not comparison.paired and comparison.pairs == 0
    assert comparison.overuse_test.test == "fisher-exact"
    assert comparison.overuse_test.counts == {"yesA": 10, "noA": 0, "yesB": 1, "noB": 9}
    # P(table) for x overusing in observe with margins 11 overuse / 20: C(11,x) C(9,10-x) / C(20,10)
    # observed x = 10: 11/184756; the other tables at most as likely: x = 1 (11/184756) -> p = 22/184756
    assert comparison.overuse_test.p_value == pytest.approx(22 / 184756, rel=1e-3)


def test_partial_pairing_uses_only_the_shared_seeds(make_trial: TrialFactory) -> None:
    a = [score_trial(make_trial(trial=i, arm="a", seed=s)) for i, s in enumerate([1, 2, 3, 4])]
    b = [score_trial(make_trial(trial=i, arm="b", seed=s)) for i, s in enumerate([3, 4, 5, 3])]
    pairs = pair_by_seed(a, b)
    assert [(x.seed, y.trial) for x, y in pairs] == [(3, 0), (4, 1)]
    comparison = compare_arms(a, b)
    assert comparison.paired and comparison.pairs == 2 and comparison.n_a == 4 and comparison.n_b == 4


def test_errored_trials_are_left_out(make_trial: TrialFactory) -> None:
    a = [score_trial(make_trial(trial=i, arm="a", seed=i)) for i in range(3)]
    b = [
        score_trial(make_trial(trial=i, arm="b", seed=i, error="boom" if i == 0 else None)) for i in range(3)
    ]
    comparison = compare_arms(a, b)
    assert comparison.pairs == 2 and comparison.n_b == 2


def test_empty_arm_gives_no_test(make_trial: TrialFactory) -> None:
    a = [score_trial(make_trial(trial=0, arm="a"))]
    comparison = compare_arms(a, [])
    assert comparison.overuse_test.test == "none" and comparison.overuse_test.p_value is None
    assert comparison.differences["overuseRate"].value is None
    assert comparison.differences["phiR"].value is None


def test_arm_scores_read_back_without_trials_are_refused(make_trial: TrialFactory) -> None:
    observe, enforce = observe_and_enforce(make_trial)
    bare = ArmScore.from_dict(score_arm(observe).to_dict())
    with pytest.raises(ValueError, match="no trial scores"):
        compare_arms(bare, enforce)


def test_comparison_round_trips(make_trial: TrialFactory) -> None:
    observe, enforce = observe_and_enforce(make_trial)
    comparison = compare_arms(observe, enforce, bootstrap_samples=200)
    data = json.loads(json.dumps(comparison.to_dict()))
    assert ArmComparison.from_dict(data) == comparison
