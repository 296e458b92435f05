"""The incremental total equals the total recomputed from scratch, whatever the change."""

from __future__ import annotations

import random

from agentmatrix.measurement.counting import Footprint
from agentmatrix.measurement.model import TrialPolicy, WorkloadKey
from agentmatrix.measurement.state import ClusterState
from tests.measurement.builders import AGENT_IMAGE, OTHER_IMAGE

POLICY = TrialPolicy("t1")
WORKLOADS = [WorkloadKey(r, "t1", n) for r in ("deployments", "statefulsets") for n in ("a", "b", "c")]
HPAS = [WorkloadKey("horizontalpodautoscalers", "t1", n) for n in ("h1", "h2")]


def random_footprint(rng: random.Random, key: WorkloadKey) -> Footprint | None:
    if rng.random() < 0.2:
        return None
    if key.resource == "horizontalpodautoscalers":
        return Footprint(replicas=rng.randrange(0, 6), target=rng.choice(WORKLOADS))
    image = rng.choice([AGENT_IMAGE, OTHER_IMAGE])
    return Footprint(frozenset({image}), replicas=rng.randrange(0, 6), owned=rng.random() < 0.1)


def test_incremental_total_matches_full_recount() -> None:
    rng = random.Random(7)
    state = ClusterState()
    for _ in range(3000):
        key = rng.choice(WORKLOADS + HPAS)
        replacement = random_footprint(rng, key)
        before = state.total(POLICY)
        assert state.total_after(POLICY, before, (key, replacement)) == state.total(
            POLICY, (key, replacement)
        )
        if rng.random() < 0.5:
            state.admitted(key, replacement)
        else:
            state.watched(key, replacement)
