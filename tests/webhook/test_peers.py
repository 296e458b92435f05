"""Webhook replicas sharing one ledger: what one allowed reaches the other's view of the trial."""

from __future__ import annotations

from pathlib import Path

from agentmatrix.api import names
from agentmatrix.measurement.counting import Footprint
from agentmatrix.measurement.model import Mode, TrialPolicy, WorkloadKey
from agentmatrix.measurement.state import ClusterState
from agentmatrix.webhook.peers import SharedAdmissions

TRIAL = TrialPolicy("t1", Mode.ENFORCE, replica_cap=3)
COPY = WorkloadKey("deployments", "elsewhere", "copy")
AGENT = Footprint(frozenset({names.DEFAULT_AGENT_IMAGE}), replicas=2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replica(ledger: Path, clock: Clock) -> SharedAdmissions:
    state = ClusterState(clock=clock)
    state.set_policy(TRIAL)
    state.watching = True
    return SharedAdmissions(ledger, state, clock=clock)


async def test_a_copy_elsewhere_allowed_by_one_replica_counts_for_the_trial_in_the_other(
    tmp_path: Path,
) -> None:
    clock = Clock()
    first, second = replica(tmp_path / "ledger.sqlite3", clock), replica(tmp_path / "ledger.sqlite3", clock)
    try:
        async with first.turn():
            first.state.admitted(COPY, AGENT)
            first.state.mark_foreign(COPY, TRIAL.namespace)
            first.record(TRIAL.namespace, COPY, AGENT)

        # The second replica takes its next turn long after: its watch reports the copy by now,
        # but only if it watches the copy's namespace, which it learns from the shared admission.
        clock.now += 60
        async with second.turn():
            pass
        assert COPY in second.state.keys_of_trial(TRIAL.namespace)
        assert second.state.scope() == {TRIAL.namespace, COPY.namespace}
        second.state.watched(COPY, AGENT)  # what that watch then reports
        assert second.state.total(TRIAL) == 2

        # Within the admission's lifetime the footprint itself is taken over, before any watch.
        fresh = WorkloadKey("deployments", "elsewhere", "another")
        async with first.turn():
            first.record(TRIAL.namespace, fresh, AGENT)
        async with second.turn():
            pass
        assert second.state.get(fresh) == AGENT
        assert second.state.total(TRIAL) == 4
    finally:
        first.close()
        second.close()
