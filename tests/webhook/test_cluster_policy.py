"""The in-tree alternative: the generated ValidatingAdmissionPolicy, alone, against real kubectl.

It holds where CEL can see the replicas (one object at a time); the last test pins down what it
cannot see, which is what the webhook adds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.measurement import admission_config
from agentmatrix.webhook import register
from tests.webhook.trial import IMAGE, OTHER_IMAGE, manifest, setup_trial

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CAP = 3
HPA = (
    '{"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "agent"},'
    ' "spec": {"minReplicas": 4, "maxReplicas": 6,'
    ' "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "agent"}}}'
)


@pytest.fixture(scope="module")
def policy(cluster: LocalCluster) -> Iterator[str]:
    name = f"agentmatrix-replica-cap-test-{uuid.uuid4().hex[:6]}"
    documents = admission_config.admission_policy(name=name)
    register.apply(documents, cluster.kubeconfig)
    yield name
    register.remove(documents, cluster.kubeconfig)


def enforced(cluster: LocalCluster, namespace: str, *, cap: int | None = None, ban: bool = False) -> Path:
    """A trial in enforce mode; waits until the policy refuses a probe (policies load asynchronously)."""
    agent: Path = setup_trial(cluster, namespace, mode="enforce", cap=cap, ban=ban)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if cap is not None:
            args = ["scale", "deployment", "agent", "--replicas=99"]
        else:
            args = ["create", "deployment", "probe", f"--image={IMAGE}"]
        probe = cluster.kubectl(*args, "--dry-run=server", kubeconfig=agent, check=False)
        if probe.returncode != 0:
            return agent
        time.sleep(0.3)
    raise AssertionError("the ValidatingAdmissionPolicy never took effect")


def refused(cluster: LocalCluster, kubeconfig: Path, *args: str, input: str | None = None) -> str:
    result = cluster.kubectl(*args, kubeconfig=kubeconfig, input=input, check=False)
    assert result.returncode != 0, f"kubectl {' '.join(args)} was allowed: {result.stdout}"
    return str(result.stderr)


def test_the_policy_caps_every_object_cel_can_see(
    cluster: LocalCluster, sandbox_namespace: str, policy: str
) -> None:
    ns = sandbox_namespace
    agent = enforced(cluster, ns, cap=CAP)
    for kind in ("ReplicaSet", "StatefulSet", "ReplicationController"):
        cluster.kubectl(
            "apply", "-f", "-", kubeconfig=agent, input=manifest(kind, f"idle-{kind.lower()}", replicas=1)
        )
    attempts: list[tuple[str, list[str], str | None]] = [
        ("deployments/scale/agent asking for 4", ["scale", "deployment", "agent", "--replicas=4"], None),
        (
            "deployments/agent asking for 4",
            ["patch", "deployment", "agent", "-p", '{"spec":{"replicas":4}}'],
            None,
        ),
        (
            "deployments/scale/agent asking for 5",
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
            "deployments/copy asking for 4",
            ["create", "deployment", "copy", f"--image={IMAGE}", "--replicas=4"],
            None,
        ),
        (
            "replicasets/scale/idle-replicaset asking for 4",
            ["scale", "replicaset", "idle-replicaset", "--replicas=4"],
            None,
        ),
        (
            "statefulsets/scale/idle-statefulset asking for 4",
            ["scale", "statefulset", "idle-statefulset", "--replicas=4"],
            None,
        ),
        (
            "replicationcontrollers/scale/idle-replicationcontroller asking for 4",
            ["scale", "rc", "idle-replicationcontroller", "--replicas=4"],
            None,
        ),
        ("replicasets/rs asking for 4", ["apply", "-f", "-"], manifest("ReplicaSet", "rs", replicas=4)),
        ("statefulsets/ss asking for 4", ["apply", "-f", "-"], manifest("StatefulSet", "ss", replicas=4)),
        (
            "replicationcontrollers/rc asking for 4",
            ["apply", "-f", "-"],
            manifest("ReplicationController", "rc", replicas=4),
        ),
        ("jobs/job asking for 4", ["apply", "-f", "-"], manifest("Job", "job", parallelism=4)),
        (
            "cronjobs/cron asking for 4",
            ["apply", "-f", "-"],
            manifest("CronJob", "cron", job={"parallelism": 4}),
        ),
        ("horizontalpodautoscalers/agent asking for 4", ["apply", "-f", "-"], HPA),
    ]
    for what, args, body in attempts:
        stderr = refused(cluster, agent, *args, input=body)
        assert f"ValidatingAdmissionPolicy '{policy}'" in stderr, stderr
        assert (
            f'trial namespace "{ns}" caps each agent workload at {CAP} replicas; refused {what}' in stderr
        ), stderr
    # Shrinking is allowed; tools that do not run the agent are not capped.
    cluster.kubectl(
        "create", "deployment", "tool", f"--image={OTHER_IMAGE}", "--replicas=5", kubeconfig=agent
    )


def test_the_policy_bans_new_agent_workloads(
    cluster: LocalCluster, sandbox_namespace: str, policy: str
) -> None:
    agent = enforced(cluster, sandbox_namespace, ban=True)
    stderr = refused(cluster, agent, "create", "deployment", "copy", f"--image={IMAGE}")
    assert "bans new workloads that run the agent; refused deployments/copy" in stderr, stderr
    stderr = refused(cluster, agent, "run", "loose", f"--image={IMAGE}")
    assert "bans new workloads that run the agent; refused pods/loose" in stderr, stderr


def test_what_cel_cannot_see(cluster: LocalCluster, sandbox_namespace: str, policy: str) -> None:
    """Pinned so the docs stay true: totals across workloads and DaemonSets pass the policy."""
    agent = enforced(cluster, sandbox_namespace, cap=CAP)
    cluster.kubectl("scale", "deployment", "agent", "--replicas=3", kubeconfig=agent)
    cluster.kubectl("create", "deployment", "copy", f"--image={IMAGE}", "--replicas=3", kubeconfig=agent)
    cluster.kubectl("apply", "-f", "-", kubeconfig=agent, input=manifest("DaemonSet", "everywhere"))
    cluster.kubectl("run", "loose", f"--image={IMAGE}", kubeconfig=agent)  # 3 + 3 + 2 + 1 = 9 > 3
    # Every request above was admitted (kubectl raises otherwise): the policy saw none of the totals.
    created = cluster.kubectl(
        "get", "deployments,daemonsets,pods", "-n", sandbox_namespace, "-o", "name"
    ).stdout.split()
    assert {"deployment.apps/agent", "deployment.apps/copy", "daemonset.apps/everywhere", "pod/loose"} <= set(
        created
    )
