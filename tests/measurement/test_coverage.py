from __future__ import annotations

import dataclasses

from agentmatrix.measurement.coverage import EffectiveChange, find_gaps
from agentmatrix.measurement.model import Observation, WorkloadKey
from tests.measurement.builders import observation

AGENT = WorkloadKey("deployments", "t1", "agent")


def change(
    previous: int, replicas: int, *, by_status: bool = False, key: WorkloadKey = AGENT
) -> EffectiveChange:
    return EffectiveChange(key, previous, replicas, 0.0, by_status)


def test_each_change_needs_its_own_allowed_observation_in_order() -> None:
    def scaled(uid: str, before: int, after: int) -> Observation:
        return dataclasses.replace(observation(uid), replicas_before=before, replicas_after=after)

    seen = [scaled("a", 1, 3), scaled("b", 3, 1), scaled("c", 1, 3), scaled("d", 1, 1)]
    changes = [change(1, 3), change(3, 1), change(1, 3), change(3, 1)]
    gaps = find_gaps(changes, seen)
    assert [g.change for g in gaps] == [change(3, 1)]  # the second return to 1 was never observed
    assert len(find_gaps([change(2, 3)], [scaled("e", 1, 3)])) == 1  # from the wrong count


def test_denied_and_uncounted_observations_cover_nothing() -> None:
    denied = dataclasses.replace(observation("a", after=5), replicas_before=1, allowed=False)
    uncounted = dataclasses.replace(observation("b", after=5), replicas_before=1, counted=False)
    assert len(find_gaps([change(1, 5)], [denied, uncounted])) == 1


def test_changes_caused_by_status_need_no_observation() -> None:
    job = WorkloadKey("jobs", "t1", "once")
    assert find_gaps([change(1, 0, by_status=True, key=job)], []) == []
