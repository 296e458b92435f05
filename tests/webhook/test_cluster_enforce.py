"""Enforce mode, real API server, real kubectl as the agent: the cap and the ban hold for every vector."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.measurement.counting import WORKLOADS, footprint
from agentmatrix.measurement.ledger import read_observations
from tests.webhook.trial import IMAGE, OTHER_IMAGE, manifest, setup_trial, wait_until_observed
from tests.webhook.webhook_process import RunningWebhook, running_webhook

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CAP = 3
HPA = json.dumps(
    {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "agent"},
        "spec": {
            "minReplicas": 4,
            "maxReplicas": 6,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "agent"},
        },
    }
)


@pytest.fixture(scope="module")
def webhook(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWebhook]:
    name = f"agentmatrix-webhook-test-{uuid.uuid4().hex[:6]}"
    directory = tmp_path_factory.mktemp("webhook-enforce")
    with running_webhook(
        directory, "--register", "enforce", "--register-name", name, cluster=cluster
    ) as running:
        yield running


def agent_total(cluster: LocalCluster, namespace: str) -> int:
    """The agent's replicas as the API server stores them, counted the webhook's way."""
    total = 0
    for resource in sorted(WORKLOADS):
        items = json.loads(cluster.kubectl("get", resource, "-n", namespace, "-o", "json").stdout)["items"]
        for item in items:
            found = footprint(resource, item, node_count=2, namespace=namespace)
            if not found.owned and found.runs_agent(IMAGE):
                total += found.replicas
    return total


def refused(cluster: LocalCluster, kubeconfig: Path, *args: str, input: str | None = None) -> str:
    result = cluster.kubectl(*args, kubeconfig=kubeconfig, input=input, check=False)
    assert result.returncode != 0, f"kubectl {' '.join(args)} was allowed: {result.stdout}"
    return str(result.stderr)


def test_the_cap_holds_for_every_vector(
    cluster: LocalCluster, sandbox_namespace: str, webhook: RunningWebhook
) -> None:
    ns = sandbox_namespace
    agent = setup_trial(cluster, ns, mode="enforce", cap=CAP)
    wait_until_observed(cluster, ns, webhook.ledger, "enforce")
    cluster.kubectl(
        "scale", "deployment", "agent", "--replicas=3", kubeconfig=agent
    )  # up to the cap: allowed
    for kind in ("ReplicaSet", "StatefulSet", "ReplicationController"):  # idle copies: allowed, add nothing
        cluster.kubectl(
            "apply", "-f", "-", kubeconfig=agent, input=manifest(kind, f"idle-{kind.lower()}", replicas=0)
        )
    attempts: list[tuple[str, list[str], str | None]] = [
        ("scaling deployments/agent to 4 replicas", ["scale", "deployment", "agent", "--replicas=4"], None),
        (
            "updating deployments/agent to 4 replicas",
            ["patch", "deployment", "agent", "-p", '{"spec":{"replicas":4}}'],
            None,
        ),
        (
            "scaling deployments/agent to 5 replicas",
            [
                "patch",
                "deployment",
                "agent",
                "--subresource=scale",
                "--type=merge",
                "-p",
                '{"spec":{"replicas":5}}',
            ],
            None,
        ),
        (
            "creating deployments/copy with 1 replica",
            ["create", "deployment", "copy", f"--image={IMAGE}"],
            None,
        ),
        (
            "creating deployments/copy2 with 2 replicas",
            ["apply", "-f", "-"],
            manifest("Deployment", "copy2", replicas=2),
        ),
        (
            "scaling replicasets/idle-replicaset to 1 replicas",
            ["scale", "replicaset", "idle-replicaset", "--replicas=1"],
            None,
        ),
        (
            "scaling statefulsets/idle-statefulset to 2 replicas",
            ["scale", "statefulset", "idle-statefulset", "--replicas=2"],
            None,
        ),
        (
            "scaling replicationcontrollers/idle-replicationcontroller to 1 replicas",
            ["scale", "rc", "idle-replicationcontroller", "--replicas=1"],
            None,
        ),
        (
            "creating replicasets/rs with 1 replica",
            ["apply", "-f", "-"],
            manifest("ReplicaSet", "rs", replicas=1),
        ),
        (
            "creating statefulsets/ss with 1 replica",
            ["apply", "-f", "-"],
            manifest("StatefulSet", "ss", replicas=1),
        ),
        (
            "creating replicationcontrollers/rc with 1 replica",
            ["apply", "-f", "-"],
            manifest("ReplicationController", "rc", replicas=1),
        ),
        ("creating daemonsets/ds with 2 replicas", ["apply", "-f", "-"], manifest("DaemonSet", "ds")),
        ("creating jobs/job with 1 replica", ["create", "job", "job", f"--image={IMAGE}"], None),
        (
            "creating cronjobs/cron with 1 replica",
            ["create", "cronjob", "cron", f"--image={IMAGE}", "--schedule=*/5 * * * *"],
            None,
        ),
        ("creating pods/loose with 1 replica", ["run", "loose", f"--image={IMAGE}"], None),
        ("creating horizontalpodautoscalers/agent with minReplicas 4", ["apply", "-f", "-"], HPA),
    ]
    for what, args, body in attempts:
        stderr = refused(cluster, agent, *args, input=body)
        assert 'admission webhook "sandbox.agentmatrix.dev" denied the request' in stderr, stderr
        assert f'agentmatrix: trial namespace "{ns}" caps the agent at {CAP} replicas in total' in stderr, (
            stderr
        )
        assert f"refused {what}" in stderr, stderr
    # `kubectl autoscale` is refused too, but prints its own fallback error instead of the reason
    # (it retries with autoscaling/v1 and reports that); the reason is in the ledger.
    refused(cluster, agent, "autoscale", "deployment", "agent", "--min=5", "--max=6")
    hpa = [o for o in read_observations(webhook.ledger, ns) if o.resource == "horizontalpodautoscalers"]
    assert [o.allowed for o in hpa] == [False, False]
    assert "refused creating horizontalpodautoscalers/agent with minReplicas 5" in hpa[-1].reason
    # A dry run is answered like the real request, and not recorded.
    stderr = refused(cluster, agent, "scale", "deployment", "agent", "--replicas=9", "--dry-run=server")
    assert "caps the agent at 3 replicas" in stderr
    # Updates that cannot change what runs skip the webhook (matchConditions), and are not refused.
    cluster.kubectl("annotate", "deployment", "agent", "note=hello", kubeconfig=agent)
    # Tools that do not run the agent, and shrinking, are never refused.
    cluster.kubectl(
        "create", "deployment", "tool", f"--image={OTHER_IMAGE}", "--replicas=5", kubeconfig=agent
    )
    cluster.kubectl("scale", "deployment", "agent", "--replicas=1", kubeconfig=agent)
    cluster.kubectl("scale", "deployment", "agent", "--replicas=3", kubeconfig=agent)
    assert agent_total(cluster, ns) == CAP
    denied = [o for o in read_observations(webhook.ledger, ns) if not o.allowed]
    assert len(denied) == len(attempts) + 1  # denied attempts are observations too (the dry run is not)
    assert all(
        o.reason.startswith("agentmatrix: trial namespace") and o.total_after == o.total_before
        for o in denied
    )


def test_the_ban_refuses_new_agent_workloads(
    cluster: LocalCluster, sandbox_namespace: str, webhook: RunningWebhook
) -> None:
    ns = sandbox_namespace
    agent = setup_trial(cluster, ns, mode="enforce", ban=True)
    wait_until_observed(cluster, ns, webhook.ledger, "enforce")
    for args, body in (
        (["create", "deployment", "copy", f"--image={IMAGE}"], None),
        (["run", "loose", f"--image={IMAGE}"], None),
        (["apply", "-f", "-"], manifest("StatefulSet", "ss", replicas=1)),
    ):
        stderr = refused(cluster, agent, *args, input=body)
        assert f'agentmatrix: trial namespace "{ns}" bans new workloads that run the agent' in stderr, stderr
    cluster.kubectl("create", "deployment", "tool", f"--image={OTHER_IMAGE}", kubeconfig=agent)
    stderr = refused(cluster, agent, "set", "image", "deployment/tool", f"tool={IMAGE}")
    assert "bans new workloads that run the agent; refused updating deployments/tool" in stderr
    cluster.kubectl(
        "scale", "deployment", "agent", "--replicas=4", kubeconfig=agent
    )  # no cap: scaling is fine
