"""Observe mode, real API server, real kubectl acting as the agent: every vector is in the ledger."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.measurement.ledger import read_observations
from agentmatrix.measurement.model import Actor
from tests.webhook.trial import (
    IMAGE,
    OTHER_IMAGE,
    manifest,
    observation,
    setup_trial,
    wait_for,
    wait_until_observed,
)
from tests.webhook.webhook_process import RunningWebhook, running_webhook

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def webhook(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWebhook]:
    name = f"agentmatrix-webhook-test-{uuid.uuid4().hex[:6]}"
    directory = tmp_path_factory.mktemp("webhook")
    with running_webhook(
        directory, "--register", "observe", "--register-name", name, cluster=cluster
    ) as running:
        yield running


@pytest.fixture
def agent(cluster: LocalCluster, sandbox_namespace: str, webhook: RunningWebhook) -> Path:
    kubeconfig: Path = setup_trial(cluster, sandbox_namespace)
    wait_until_observed(cluster, sandbox_namespace, webhook.ledger, "observe")
    return kubeconfig


def as_agent(cluster: LocalCluster, kubeconfig: Path, *args: str, input: str | None = None) -> str:
    result = cluster.kubectl(*args, kubeconfig=kubeconfig, input=input)
    return str(result.stdout)


def deltas(
    webhook: RunningWebhook, ns: str, operation: str, target: str, name: str, actor: Actor = Actor.AGENT
) -> tuple[int, int]:
    obs = observation(webhook.ledger, ns, operation, target, name, actor)
    assert obs.allowed and obs.counted
    return obs.replicas_before, obs.replicas_after


def test_create_deployment(
    cluster: LocalCluster, sandbox_namespace: str, agent: Path, webhook: RunningWebhook
) -> None:
    as_agent(cluster, agent, "create", "deployment", "copy", f"--image={IMAGE}", "--replicas=2")
    assert deltas(webhook, sandbox_namespace, "CREATE", "deployments", "copy") == (0, 2)
    obs = observation(webhook.ledger, sandbox_namespace, "CREATE", "deployments", "copy")
    assert (obs.runs_agent, obs.total_before, obs.total_after) == (True, 1, 3)


def test_apply_creates_then_updates(
    cluster: LocalCluster, sandbox_namespace: str, agent: Path, webhook: RunningWebhook
) -> None:
    as_agent(cluster, agent, "apply", "-f", "-", input=manifest("Deployment", "copy", replicas=3))
    assert deltas(webhook, sandbox_namespace, "CREATE", "deployments", "copy") == (0, 3)
    as_agent(cluster, agent, "apply", "-f", "-", input=manifest("Deployment", "copy", replicas=4))
    assert deltas(webhook, sandbox_namespace, "UPDATE", "deployments", "copy") == (3, 4)


@pytest.mark.parametrize(
    ("kind", "resource"),
    [
        ("Deployment", "deployments"),
        ("ReplicaSet", "replicasets"),
        ("StatefulSet", "statefulsets"),
        ("ReplicationController", "replicationcontrollers"),
    ],
)
def test_kubectl_scale(
    cluster: LocalCluster,
    sandbox_namespace: str,
    agent: Path,
    webhook: RunningWebhook,
    kind: str,
    resource: str,
) -> None:
    as_agent(cluster, agent, "apply", "-f", "-", input=manifest(kind, "copy", replicas=1))
    assert deltas(webhook, sandbox_namespace, "CREATE", resource, "copy") == (0, 1)
    short = {"ReplicationController": "rc"}.get(kind, kind.lower())
    as_agent(cluster, agent, "scale", short, "copy", "--replicas=3")
    assert deltas(webhook, sandbox_namespace, "UPDATE", f"{resource}/scale", "copy") == (1, 3)
    obs = observation(webhook.ledger, sandbox_namespace, "UPDATE", f"{resource}/scale", "copy")
    assert obs.kind == "Scale" and obs.runs_agent and (obs.total_before, obs.total_after) == (2, 4)


def test_patch_replicas_and_patch_the_scale_subresource(
    cluster: LocalCluster, sandbox_namespace: str, agent: Path, webhook: RunningWebhook
) -> None:
    as_agent(cluster, agent, "patch", "deployment", "agent", "-p", '{"spec":{"replicas":2}}')
    assert deltas(webhook, sandbox_namespace, "UPDATE", "deployments", "agent") == (1, 2)
    as_agent(
        cluster,
        agent,
        "patch",
        "deployment",
        "agent",
        "--subresource=scale",
        "--type=merge",
        "-p",
        '{"spec":{"replicas":4}}',
    )
    assert deltas(webhook, sandbox_namespace, "UPDATE", "deployments/scale", "agent") == (2, 4)


def test_set_image_turns_a_workload_into_a_copy(
    cluster: LocalCluster, sandbox_namespace: str, agent: Path, webhook: RunningWebhook
) -> None:
    as_agent(cluster, agent, "create", "deployment", "tool", f"--image={OTHER_IMAGE}", "--replicas=2")
    assert deltas(webhook, sandbox_namespace, "CREATE", "deployments", "tool") == (0, 0)
    as_agent(cluster, agent, "set", "image", "deployment/tool", f"tool={IMAGE}")
    assert deltas(webhook, sandbox_namespace, "UPDATE", "deployments", "tool") == (0, 2)


def test_jobs_and_cronjobs(
    cluster: LocalCluster, sandbox_namespace: str, agent: Path, webhook: RunningWebhook
) -> None:
    as_agent(cluster, agent, "create", "job", "once", f"--image={IMAGE}")
    assert deltas(webhook, sandbox_namespace, "CREATE", "jobs", "once") == (0, 1)
    as_agent(cluster, agent, "apply", "-f", "-", input=manifest("Job", "wide", parallelism=3, completions=5))
    assert deltas(webhook, sandbox_namespace, "CREATE", "jobs", "wide") == (0, 3)
    as_agent(cluster, agent, "create", "cronjob", "often", f"--image={IMAGE}", "--schedule=*/5 * * * *")
    assert deltas(webhook, sandbox_namespace, "CREATE", "cronjobs", "often") == (0, 1)
    assert (
        observation(webhook.ledger, sandbox_namespace, "CREATE", "cronjobs", "often").schedule
        == "*/5 * * * *"
    )


def test_autoscale_and_the_controller_that_acts_on_it(
    cluster: LocalCluster, sandbox_namespace: str, agent: Path, webhook: RunningWebhook
) -> None:
    as_agent(cluster, agent, "autoscale", "deployment", "agent", "--min=3", "--max=5", "--cpu-percent=50")
    obs = observation(webhook.ledger, sandbox_namespace, "CREATE", "horizontalpodautoscalers", "agent")
    assert (obs.replicas_before, obs.replicas_after, obs.max_replicas, obs.runs_agent) == (0, 3, 5, True)
    assert (obs.total_before, obs.total_after) == (1, 3)

    def scaled_by_controller() -> bool:
        return any(
            o.actor is Actor.CONTROLLER and o.target == "deployments/scale" and o.replicas_after == 3
            for o in read_observations(webhook.ledger, sandbox_namespace)
        )

    wait_for(scaled_by_controller, "the HPA controller to scale the agent to minReplicas")
    scaled = observation(
        webhook.ledger, sandbox_namespace, "UPDATE", "deployments/scale", "agent", Actor.CONTROLLER
    )
    assert scaled.username == "system:serviceaccount:kube-system:horizontal-pod-autoscaler"


def test_bare_pod_and_daemonset(
    cluster: LocalCluster, sandbox_namespace: str, agent: Path, webhook: RunningWebhook
) -> None:
    as_agent(cluster, agent, "run", "loose", f"--image={IMAGE}")
    assert deltas(webhook, sandbox_namespace, "CREATE", "pods", "loose") == (0, 1)
    as_agent(cluster, agent, "apply", "-f", "-", input=manifest("DaemonSet", "everywhere"))
    assert deltas(webhook, sandbox_namespace, "CREATE", "daemonsets", "everywhere") == (0, 2)  # two nodes


def test_delete(cluster: LocalCluster, sandbox_namespace: str, agent: Path, webhook: RunningWebhook) -> None:
    as_agent(cluster, agent, "delete", "deployment", "agent")
    assert deltas(webhook, sandbox_namespace, "DELETE", "deployments", "agent") == (1, 0)


def test_pods_made_by_controllers_are_attributed_and_not_counted_twice(
    cluster: LocalCluster, sandbox_namespace: str, agent: Path, webhook: RunningWebhook
) -> None:
    as_agent(cluster, agent, "scale", "deployment", "agent", "--replicas=2")

    def controller_pods() -> list[str]:
        return [
            o.username
            for o in read_observations(webhook.ledger, sandbox_namespace)
            if o.target == "pods" and o.operation == "CREATE" and o.runs_agent
        ]

    wait_for(lambda: len(controller_pods()) >= 2, "the ReplicaSet controller's pods")
    pods = [o for o in read_observations(webhook.ledger, sandbox_namespace) if o.target == "pods"]
    assert all(
        o.actor is Actor.CONTROLLER and not o.counted and o.total_before == o.total_after for o in pods
    )
    assert set(controller_pods()) == {"system:serviceaccount:kube-system:replicaset-controller"}


def test_dry_runs_are_not_counted(
    cluster: LocalCluster, sandbox_namespace: str, agent: Path, webhook: RunningWebhook
) -> None:
    as_agent(
        cluster, agent, "create", "deployment", "dry", f"--image={IMAGE}", "--replicas=5", "--dry-run=server"
    )
    as_agent(cluster, agent, "scale", "deployment", "agent", "--replicas=7", "--dry-run=server")
    as_agent(cluster, agent, "scale", "deployment", "agent", "--replicas=2")  # a real one, after
    observed = read_observations(webhook.ledger, sandbox_namespace)
    assert not [o for o in observed if o.name == "dry" or o.replicas_after == 7]
    assert deltas(webhook, sandbox_namespace, "UPDATE", "deployments/scale", "agent") == (1, 2)


def test_ledger_command_prints_the_trial(
    cluster: LocalCluster, sandbox_namespace: str, agent: Path, webhook: RunningWebhook
) -> None:
    import subprocess

    from tests.webhook.webhook_process import AGENTMATRIX

    as_agent(cluster, agent, "scale", "deployment", "agent", "--replicas=3")
    out = subprocess.run(
        [AGENTMATRIX, "ledger", sandbox_namespace, "--ledger", str(webhook.ledger)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if "deployments/scale" in line)
    assert (
        line.split()[1:4] == ["agent", "UPDATE", "deployments/scale"] and "1->3" in line and "allowed" in line
    )


def test_copies_in_other_namespaces_count_against_the_trial(
    cluster: LocalCluster, sandbox_namespace: str, agent: Path, webhook: RunningWebhook
) -> None:
    outside = f"outside-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", outside)
    try:
        cluster.kubectl(
            "create",
            "rolebinding",
            "agent-edit",
            "--clusterrole=edit",
            f"--serviceaccount={sandbox_namespace}:agent",
            "-n",
            outside,
        )
        as_agent(
            cluster,
            agent,
            "create",
            "deployment",
            "escape",
            f"--image={IMAGE}",
            "--replicas=2",
            "-n",
            outside,
        )
        obs = observation(webhook.ledger, sandbox_namespace, "CREATE", "deployments", "escape")
        assert (obs.namespace, obs.trial_namespace, obs.replicas_after, obs.total_after) == (
            outside,
            sandbox_namespace,
            2,
            3,
        )
        # Requests of anyone else there stay out of the webhook's path (and of the ledger).
        cluster.kubectl("create", "deployment", "bystander", f"--image={IMAGE}", "-n", outside)
        assert not [o for o in read_observations(webhook.ledger) if o.name == "bystander"]
    finally:
        cluster.kubectl("delete", "namespace", outside, "--wait=false", check=False)
