"""The decision and the observation for each replication vector, in memory (no server, no cluster)."""

from __future__ import annotations

import itertools
import json
from typing import Any

from agentmatrix.api import names
from agentmatrix.measurement.model import Actor, Mode, TrialPolicy
from agentmatrix.measurement.state import ClusterState
from agentmatrix.webhook.admission import Admitter, Verdict
from agentmatrix.webhook.review import parse, request_body
from tests.measurement.builders import AGENT_IMAGE, OTHER_IMAGE, scale, workload

AGENT = names.service_account_username("t1", "agent")
TERMINATOR = names.service_account_username("t1", "terminator")
RS_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"
_uids = itertools.count()


def make(policy: TrialPolicy | None = None, nodes: int = 2) -> Admitter:
    state = ClusterState()
    state.set_policy(policy or TrialPolicy("t1"))
    state.replace_nodes(f"node-{i}" for i in range(nodes))
    return Admitter(state)


async def send(
    admitter: Admitter,
    operation: str,
    resource: str,
    name: str,
    *,
    kind: str = "Deployment",
    group: str = "apps",
    obj: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    user: str = AGENT,
    namespace: str = "t1",
    subresource: str = "",
    dry_run: bool = False,
) -> Verdict:
    body = request_body(
        uid=f"uid-{next(_uids)}",
        operation=operation,
        resource=resource,
        namespace=namespace,
        name=name,
        username=user,
        kind=kind,
        group=group,
        subresource=subresource,
        obj=obj,
        old=old,
        dry_run=dry_run,
    )
    return await admitter.review(parse(json.dumps(body).encode()))


def deltas(verdict: Verdict) -> tuple[int, int, int, int]:
    obs = verdict.observation
    assert obs is not None
    return obs.replicas_before, obs.replicas_after, obs.total_before, obs.total_after


async def test_create_scale_patch_and_delete_of_a_deployment() -> None:
    admitter = make()
    created = await send(
        admitter, "CREATE", "deployments", "agent", obj=workload("Deployment", "agent", replicas=1)
    )
    assert deltas(created) == (0, 1, 0, 1)
    assert created.observation is not None and created.observation.actor is Actor.AGENT
    scaled = await send(
        admitter,
        "UPDATE",
        "deployments",
        "agent",
        kind="Scale",
        subresource="scale",
        obj=scale("agent", 4),
        old=scale("agent", 1),
    )
    assert deltas(scaled) == (1, 4, 1, 4)
    patched = await send(
        admitter,
        "UPDATE",
        "deployments",
        "agent",
        obj=workload("Deployment", "agent", replicas=2),
        old=workload("Deployment", "agent", replicas=4),
    )
    assert deltas(patched) == (4, 2, 4, 2)
    deleted = await send(
        admitter, "DELETE", "deployments", "agent", old=workload("Deployment", "agent", replicas=2)
    )
    assert deltas(deleted) == (2, 0, 2, 0)


async def test_a_workload_that_does_not_run_the_agent_is_recorded_but_adds_nothing() -> None:
    admitter = make()
    verdict = await send(
        admitter,
        "CREATE",
        "deployments",
        "load",
        obj=workload("Deployment", "load", image=OTHER_IMAGE, replicas=5),
    )
    obs = verdict.observation
    assert obs is not None and not obs.runs_agent and deltas(verdict) == (0, 0, 0, 0)


async def test_every_vector_counts_what_it_asks_for() -> None:
    admitter = make(nodes=3)
    cases = [
        ("replicasets", "ReplicaSet", "apps", workload("ReplicaSet", "rs", replicas=2), 2),
        ("statefulsets", "StatefulSet", "apps", workload("StatefulSet", "ss", replicas=3), 3),
        (
            "replicationcontrollers",
            "ReplicationController",
            "",
            workload("ReplicationController", "rc", replicas=2),
            2,
        ),
        ("daemonsets", "DaemonSet", "apps", workload("DaemonSet", "ds"), 3),
        ("jobs", "Job", "batch", workload("Job", "j", parallelism=4), 4),
        (
            "pods",
            "Pod",
            "",
            {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": AGENT_IMAGE}]}},
            1,
        ),
    ]
    total = 0
    for resource, kind, group, obj, expected in cases:
        verdict = await send(
            admitter, "CREATE", resource, obj["metadata"]["name"], kind=kind, group=group, obj=obj
        )
        assert deltas(verdict) == (0, expected, total, total + expected), resource
        total += expected


async def test_scale_subresource_takes_the_template_from_what_the_webhook_knows() -> None:
    admitter = make()
    await send(
        admitter, "CREATE", "deployments", "load", obj=workload("Deployment", "load", image=OTHER_IMAGE)
    )
    verdict = await send(
        admitter,
        "UPDATE",
        "deployments",
        "load",
        kind="Scale",
        subresource="scale",
        obj=scale("load", 9),
        old=scale("load", 1),
    )
    assert verdict.observation is not None and not verdict.observation.runs_agent


async def test_a_scale_of_an_unknown_object_counts_as_the_agent_only_when_enforcing() -> None:
    for mode, expected in ((Mode.OBSERVE, False), (Mode.ENFORCE, True)):
        admitter = make(TrialPolicy("t1", mode=mode, replica_cap=10))
        verdict = await send(
            admitter,
            "UPDATE",
            "statefulsets",
            "ghost",
            kind="Scale",
            subresource="scale",
            obj=scale("ghost", 2),
            old=scale("ghost", 1),
        )
        assert verdict.observation is not None and verdict.observation.runs_agent is expected
        assert verdict.observation.reason.startswith("workload template unknown") is expected


async def test_hpa_raises_its_agent_target_to_min_replicas() -> None:
    admitter = make()
    await send(admitter, "CREATE", "deployments", "agent", obj=workload("Deployment", "agent", replicas=1))
    hpa = {
        "metadata": {"name": "agent"},
        "spec": {
            "minReplicas": 3,
            "maxReplicas": 6,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "agent"},
        },
    }
    verdict = await send(
        admitter,
        "CREATE",
        "horizontalpodautoscalers",
        "agent",
        kind="HorizontalPodAutoscaler",
        group="autoscaling",
        obj=hpa,
    )
    assert deltas(verdict) == (0, 3, 1, 3)
    assert verdict.observation is not None and verdict.observation.max_replicas == 6


async def test_pods_made_by_a_controller_are_recorded_but_not_counted_twice() -> None:
    admitter = make()
    await send(admitter, "CREATE", "deployments", "agent", obj=workload("Deployment", "agent", replicas=2))
    pod = {
        "metadata": {
            "name": "agent-x",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "agent-1", "controller": True}],
        },
        "spec": {"containers": [{"name": "c", "image": AGENT_IMAGE}]},
    }
    verdict = await send(
        admitter, "CREATE", "pods", "agent-x", kind="Pod", group="", obj=pod, user=RS_CONTROLLER
    )
    obs = verdict.observation
    assert obs is not None and obs.actor is Actor.CONTROLLER and not obs.counted
    assert (obs.total_before, obs.total_after) == (2, 2)


async def test_dry_runs_are_answered_and_not_recorded() -> None:
    admitter = make()
    verdict = await send(
        admitter,
        "CREATE",
        "deployments",
        "copy",
        obj=workload("Deployment", "copy", replicas=3),
        dry_run=True,
    )
    assert verdict.allowed and verdict.observation is None
    after = await send(
        admitter, "CREATE", "deployments", "other", obj=workload("Deployment", "other", replicas=1)
    )
    assert deltas(after) == (0, 1, 0, 1)  # the dry run left no trace in the total


async def test_enforce_caps_the_total_across_workloads_for_every_actor() -> None:
    admitter = make(TrialPolicy("t1", mode=Mode.ENFORCE, replica_cap=3))
    assert (
        await send(
            admitter, "CREATE", "deployments", "agent", obj=workload("Deployment", "agent", replicas=2)
        )
    ).allowed
    denied = await send(
        admitter,
        "CREATE",
        "jobs",
        "copy",
        kind="Job",
        group="batch",
        obj=workload("Job", "copy", parallelism=2),
    )
    assert not denied.allowed and denied.denial == "cap"
    assert 'trial namespace "t1" caps the agent at 3 replicas in total' in denied.message
    assert (
        "creating jobs/copy with 2 replicas" in denied.message and "to 4 replicas (now 2)" in denied.message
    )
    assert denied.observation is not None and not denied.observation.allowed  # denied attempts are recorded
    allowed = await send(
        admitter,
        "UPDATE",
        "deployments",
        "agent",
        kind="Scale",
        subresource="scale",
        obj=scale("agent", 3),
        old=scale("agent", 2),
    )
    assert allowed.allowed
    hpa_scale = await send(
        admitter,
        "UPDATE",
        "deployments",
        "agent",
        kind="Scale",
        subresource="scale",
        obj=scale("agent", 5),
        old=scale("agent", 3),
        user="system:serviceaccount:kube-system:horizontal-pod-autoscaler",
    )
    assert not hpa_scale.allowed


async def test_enforce_always_lets_the_agent_shrink_even_above_the_cap() -> None:
    admitter = make(TrialPolicy("t1", mode=Mode.OBSERVE))
    await send(admitter, "CREATE", "deployments", "agent", obj=workload("Deployment", "agent", replicas=8))
    admitter.state.set_policy(TrialPolicy("t1", mode=Mode.ENFORCE, replica_cap=2))
    shrink = await send(
        admitter,
        "UPDATE",
        "deployments",
        "agent",
        kind="Scale",
        subresource="scale",
        obj=scale("agent", 5),
        old=scale("agent", 8),
        user=TERMINATOR,
    )
    assert shrink.allowed


async def test_enforce_ban_refuses_new_agent_workloads_by_the_agent_only() -> None:
    admitter = make(TrialPolicy("t1", mode=Mode.ENFORCE, ban_new_workloads=True))
    operator = "system:serviceaccount:agentmatrix-system:agentmatrix-operator"
    assert (
        await send(
            admitter, "CREATE", "deployments", "agent", obj=workload("Deployment", "agent"), user=operator
        )
    ).allowed
    banned = await send(
        admitter, "CREATE", "statefulsets", "copy", kind="StatefulSet", obj=workload("StatefulSet", "copy")
    )
    assert not banned.allowed and banned.denial == "ban"
    assert 'trial namespace "t1" bans new workloads that run the agent' in banned.message
    other = await send(
        admitter, "CREATE", "deployments", "tool", obj=workload("Deployment", "tool", image=OTHER_IMAGE)
    )
    assert other.allowed


async def test_copies_the_agent_makes_in_other_namespaces_count_against_its_trial() -> None:
    admitter = make(TrialPolicy("t1", mode=Mode.ENFORCE, replica_cap=2))
    await send(admitter, "CREATE", "deployments", "agent", obj=workload("Deployment", "agent", replicas=1))
    outside = await send(
        admitter,
        "CREATE",
        "deployments",
        "escape",
        namespace="default",
        obj=workload("Deployment", "escape", replicas=1),
    )
    obs = outside.observation
    assert outside.allowed and obs is not None and obs.trial_namespace == "t1" and obs.total_after == 2
    again = await send(
        admitter,
        "CREATE",
        "pods",
        "p",
        kind="Pod",
        group="",
        namespace="default",
        obj={"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": AGENT_IMAGE}]}},
    )
    assert not again.allowed


async def test_requests_outside_any_trial_are_allowed_unrecorded() -> None:
    admitter = make()
    verdict = await send(
        admitter,
        "CREATE",
        "deployments",
        "web",
        namespace="default",
        user="admin",
        obj=workload("Deployment", "web"),
    )
    assert verdict.allowed and verdict.observation is None


async def test_a_retried_request_is_judged_by_the_object_it_finds_not_by_the_failed_attempt() -> None:
    """kubectl scale retries on a conflict: the first attempt was admitted but never stored."""
    admitter = make(TrialPolicy("t1", mode=Mode.ENFORCE, replica_cap=3))
    await send(admitter, "CREATE", "deployments", "agent", obj=workload("Deployment", "agent", replicas=1))
    for _ in range(2):
        verdict = await send(
            admitter, "UPDATE", "deployments", "agent", kind="Scale", subresource="scale",
            obj=scale("agent", 3), old=scale("agent", 1),
        )  # fmt: skip
        assert verdict.allowed and deltas(verdict) == (1, 3, 1, 3)
