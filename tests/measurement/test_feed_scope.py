"""The webhook's feed on a real control plane: workloads are watched only where its trials are.

The watches follow the state's scope: a sandbox of the webhook's own evals is watched from the
moment its namespace appears, a namespace where a trial's agent made an object is watched once the
object is marked as that trial's, and both stop when the trial's sandbox goes. Namespaces outside
the scope (another eval's sandbox, a plain namespace) are never watched, however busy they are.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from agentmatrix.api import names
from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.kube import Kube, KubeAccess
from agentmatrix.measurement.feed import ClusterFeed
from agentmatrix.measurement.model import WorkloadKey
from agentmatrix.measurement.state import ClusterState

IMAGE = names.DEFAULT_AGENT_IMAGE


async def until(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        await asyncio.sleep(0.05)


def make_namespace(cluster: LocalCluster, name: str, evals_namespace: str | None) -> None:
    cluster.kubectl("create", "namespace", name)
    if evals_namespace is not None:
        cluster.kubectl(
            "label", "namespace", name, f"{names.LABEL_SANDBOX}=true",
            f"{names.LABEL_EVAL_NAMESPACE}={evals_namespace}",
        )  # fmt: skip
    cluster.kubectl("create", "deployment", "agent", f"--image={IMAGE}", "-n", name)


def deployment(namespace: str) -> WorkloadKey:
    return WorkloadKey("deployments", namespace, "agent")


@pytest.fixture
async def scoped(cluster: LocalCluster) -> AsyncIterator[tuple[ClusterFeed, dict[str, str]]]:
    """A feed for the evals of `team-<id>`, after: its sandbox `ours`, another eval's sandbox
    `theirs` and a plain namespace `plain`, each with a Deployment `agent` of the agent's image."""
    suffix = uuid.uuid4().hex[:6]
    team = f"team-{suffix}"
    spaces = {"ours": f"ours-{suffix}", "theirs": f"theirs-{suffix}", "plain": f"plain-{suffix}"}
    make_namespace(cluster, spaces["ours"], team)
    make_namespace(cluster, spaces["theirs"], f"other-{suffix}")
    make_namespace(cluster, spaces["plain"], None)
    # No admitted footprint outlives its request: whatever the state knows, a watch told it.
    state = ClusterState(admitted_ttl=0.0)
    feed = ClusterFeed(
        Kube(KubeAccess.load(cluster.kubeconfig), connections=0), state, evals_namespaces=(team,)
    )
    feed.start()
    try:
        await asyncio.wait_for(feed.synced.wait(), 30)
        yield feed, {**spaces, "team": team}
    finally:
        await feed.stop()
        for name in spaces.values():
            cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


async def test_only_the_webhooks_own_sandboxes_are_watched(
    cluster: LocalCluster, scoped: tuple[ClusterFeed, dict[str, str]]
) -> None:
    feed, spaces = scoped
    state = feed.state
    assert feed.watched_namespaces == {spaces["ours"]}
    found = state.get(deployment(spaces["ours"]))
    assert found is not None and found.replicas == 1 and found.runs_agent(IMAGE)
    assert state.get(deployment(spaces["theirs"])) is None
    assert state.get(deployment(spaces["plain"])) is None

    cluster.kubectl("scale", "deployment", "agent", "--replicas=3", "-n", spaces["ours"])
    await until(lambda: getattr(state.get(deployment(spaces["ours"])), "replicas", 0) == 3, "the scale seen")
    cluster.kubectl("scale", "deployment", "agent", "--replicas=4", "-n", spaces["theirs"])
    await asyncio.sleep(0.5)  # more than a watch batch: an event of another eval would have arrived
    assert state.get(deployment(spaces["theirs"])) is None

    # A sandbox of the same evals made later is watched from the moment its namespace is seen.
    later = f"later-{spaces['team'][5:]}"
    make_namespace(cluster, later, spaces["team"])
    try:
        await until(lambda: state.get(deployment(later)) is not None, "the new sandbox's Deployment")
        assert feed.watched_namespaces == {spaces["ours"], later}
    finally:
        cluster.kubectl("delete", "namespace", later, "--wait=false", check=False)
    await until(lambda: later not in feed.watched_namespaces, "the deleted sandbox unwatched")
    assert state.get(deployment(later)) is None


async def test_where_the_agent_made_an_object_is_watched_while_its_trial_lasts(
    cluster: LocalCluster, scoped: tuple[ClusterFeed, dict[str, str]]
) -> None:
    feed, spaces = scoped
    state = feed.state
    ours, plain = spaces["ours"], spaces["plain"]
    copy = deployment(plain)
    state.mark_foreign(copy, ours)  # what the webhook does when it admits the agent's copy there
    await until(lambda: state.get(copy) is not None, "the copy elsewhere, from its namespace's watch")
    assert feed.watched_namespaces == {ours, plain}
    policy = state.policy(ours)
    assert policy is not None and state.total(policy) == 2

    # Changes made there by anyone, long after the admission, still reach the trial's total.
    cluster.kubectl("scale", "deployment", "agent", "--replicas=5", "-n", plain)
    await until(lambda: state.total(policy) == 6, "the copy's new replicas in the trial's total")

    # The trial ends (its sandbox is no longer one of the evals'): nothing of it stays watched.
    cluster.kubectl("label", "namespace", ours, f"{names.LABEL_EVAL_NAMESPACE}=gone", "--overwrite")
    await until(lambda: not feed.watched_namespaces, "both namespaces unwatched")
    assert state.get(copy) is None and state.get(deployment(ours)) is None
