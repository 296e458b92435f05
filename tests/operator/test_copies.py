"""What the copy tracker counts and when it considers the workload controllers caught up: the
rules the final count of every trial rests on. Objects are shaped as the API server returns them."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from agentmatrix.api import names
from agentmatrix.kube import Kube, KubeAccess
from agentmatrix.operator.copies import CopyTracker, controllers_caught_up, pod_state

IMAGE = "agentmatrix.dev/agent:test"
ROLE = {names.LABEL_ROLE: names.ROLE_AGENT}


def pod(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    image: str = IMAGE,
    ready: bool = True,
    phase: str = "Running",
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "labels": dict(ROLE if labels is None else labels),
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "service", "image": image}]},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def workload(
    name: str, *, generation: int, observed: int, wanted: int, have: int, **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "generation": generation},
        "spec": {"replicas": wanted},
        "status": {"observedGeneration": observed, "replicas": have, **status},
    }


def test_a_copy_runs_the_agent_and_serves_only_when_ready_and_selected() -> None:
    assert pod_state(pod("a"), IMAGE).serving
    not_ready = pod_state(pod("b", ready=False), IMAGE)
    assert not_ready.copy and not not_ready.serving and not_ready.behind_service
    unlabelled = pod_state(pod("c", labels={}), IMAGE)  # the agent's image, outside the Service
    assert unlabelled.copy and not unlabelled.serving and not unlabelled.behind_service
    assert not pod_state(pod("d", labels={}, image="nginx"), IMAGE).copy
    assert not pod_state(pod("e", deleting=True), IMAGE).copy
    assert not pod_state(pod("f", phase="Succeeded"), IMAGE).copy


def test_controllers_are_caught_up_only_when_each_has_done_what_it_was_asked() -> None:
    deployment_done = workload("agent", generation=2, observed=2, wanted=3, have=3)
    deployment_behind = workload("agent", generation=3, observed=2, wanted=5, have=3)
    rs_done = workload("agent-1", generation=2, observed=2, wanted=3, have=3)
    rs_short = workload("agent-1", generation=2, observed=2, wanted=5, have=3)
    rs_refused = workload(
        "agent-1", generation=2, observed=2, wanted=5, have=3,
        conditions=[{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate"}],
    )  # fmt: skip
    sts_short = workload("db", generation=1, observed=1, wanted=2, have=1)

    assert controllers_caught_up([deployment_done], [rs_done], [], [])
    assert not controllers_caught_up([deployment_behind], [rs_done], [], [])
    assert not controllers_caught_up([deployment_done], [rs_short], [], [])
    # A quota or a policy refused the pods: waiting longer changes nothing.
    assert controllers_caught_up([deployment_done], [rs_refused], [], [])
    assert not controllers_caught_up([], [], [sts_short], [])
    assert not controllers_caught_up([], [], [], [rs_short])  # a ReplicationController
    assert controllers_caught_up([], [], [], [])


async def test_the_tracker_follows_its_watch_and_records_each_change_of_the_count() -> None:
    unused = Kube(KubeAccess("https://127.0.0.1:1", False, dict))  # only settle() calls it
    tracker = CopyTracker(unused, "ns", IMAGE)
    seen: list[int] = []
    tracker.on_change = seen.append
    for resource in ("pods", "deployments", "replicasets", "statefulsets", "replicationcontrollers"):
        tracker.listed(resource, [])
    assert await tracker.wait_for(lambda t: t.copies() == 0, within=1.0)

    tracker.changed("deployments", "ADDED", workload("agent", generation=1, observed=0, wanted=1, have=0))
    assert not tracker._watched_controllers_caught_up()
    tracker.changed("pods", "ADDED", pod("a", ready=False))
    tracker.changed("pods", "MODIFIED", pod("a"))
    tracker.changed("deployments", "MODIFIED", workload("agent", generation=1, observed=1, wanted=1, have=1))
    assert tracker._watched_controllers_caught_up()
    assert tracker.serving() == 1

    waiter = asyncio.create_task(tracker.wait_for(lambda t: t.serving() == 2, within=5.0))
    tracker.changed("pods", "ADDED", pod("b"))
    assert await waiter
    tracker.changed("pods", "DELETED", pod("a"))
    tracker.listed("pods", [pod("b"), pod("c", labels={})])  # a relist: c appeared, nothing gone
    assert [count for _, count in tracker.timeline] == seen == [0, 1, 2, 1, 2]
    assert (tracker.copies(), tracker.serving()) == (2, 1)


class ApiServerLists:
    """Stands in for the API server's namespace lists that settle() takes to confirm its watches:
    each list returns the objects as they are now, whatever the watches have delivered."""

    def __init__(self) -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {}
        self.calls = 0

    async def list(self, path: str) -> list[dict[str, Any]]:
        self.calls += 1
        return self.objects.get(path.rsplit("/", 1)[1], [])


def tracker_with(server: ApiServerLists) -> CopyTracker:
    tracker = CopyTracker(cast(Kube, server), "ns", IMAGE)
    for resource in ("pods", "deployments", "replicasets", "statefulsets", "replicationcontrollers"):
        tracker.listed(resource, server.objects.get(resource, []))
    return tracker


async def test_settle_does_not_trust_a_watch_that_is_behind_the_api_server() -> None:
    server = ApiServerLists()
    server.objects = {
        "deployments": [workload("agent", generation=1, observed=1, wanted=1, have=1)],
        "replicasets": [workload("agent-1", generation=1, observed=1, wanted=1, have=1)],
        "pods": [pod("a")],
    }
    tracker = tracker_with(server)
    # The agent's last request scaled the Deployment to 2; the watches have not delivered it yet,
    # so what they show looks settled.
    server.objects["deployments"] = [workload("agent", generation=2, observed=1, wanted=2, have=1)]
    settling = asyncio.create_task(tracker.settle(within=10.0))
    await asyncio.sleep(0.3)
    assert not settling.done()

    # The controllers act, the API server has the result, and the watches deliver it.
    server.objects = {
        "deployments": [workload("agent", generation=2, observed=2, wanted=2, have=2)],
        "replicasets": [workload("agent-1", generation=2, observed=2, wanted=2, have=2)],
        "pods": [pod("a"), pod("b")],
    }
    tracker.changed("deployments", "MODIFIED", server.objects["deployments"][0])
    tracker.changed("replicasets", "MODIFIED", server.objects["replicasets"][0])
    tracker.changed("pods", "ADDED", pod("b"))
    assert await asyncio.wait_for(settling, 5.0)
    assert (tracker.copies(), tracker.serving()) == (2, 2)


async def test_settle_confirms_a_watch_that_is_up_to_date_with_one_round_of_lists() -> None:
    server = ApiServerLists()
    server.objects = {
        "deployments": [workload("agent", generation=2, observed=2, wanted=3, have=3)],
        "replicasets": [workload("agent-1", generation=2, observed=2, wanted=3, have=3)],
        "pods": [pod("a"), pod("b"), pod("c")],
    }
    tracker = tracker_with(server)
    assert await tracker.settle(within=5.0)
    assert server.calls == 5  # pods and the four controller kinds, once each
    assert tracker.copies() == 3


async def test_settle_at_its_deadline_counts_what_the_api_server_lists() -> None:
    server = ApiServerLists()
    server.objects = {"deployments": [workload("agent", generation=1, observed=1, wanted=1, have=1)]}
    server.objects["pods"] = [pod("a")]
    tracker = tracker_with(server)
    server.objects["pods"] = [pod("a"), pod("b", ready=False)]  # never delivered by the watch
    assert not await tracker.settle(within=0.5)
    assert (tracker.copies(), tracker.serving()) == (2, 1)
