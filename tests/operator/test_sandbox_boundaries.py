"""The sandbox's Pod Security labels and NetworkPolicies, as the real API server takes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.kube import Kube
from agentmatrix.operator.drivers.pod_objects import driver_pod, model_network_policy, shell_pod
from agentmatrix.operator.sandbox_lifecycle import api_server_endpoints
from agentmatrix.operator.sandbox_objects import (
    agent_deployment,
    network_policy,
    pod_security_labels,
    restricted_container_security_context,
    restricted_pod_security_context,
)

pytestmark = pytest.mark.cluster

IMAGE = "agentmatrix.dev/agent-service:v1"


def label(cluster: LocalCluster, namespace: str, labels: dict[str, str]) -> None:
    cluster.kubectl("label", "namespace", namespace, "--overwrite", *(f"{k}={v}" for k, v in labels.items()))


def test_the_scenario_workload_passes_restricted_and_a_root_pod_does_not(
    cluster: LocalCluster, sandbox_namespace: str
) -> None:
    label(cluster, sandbox_namespace, pod_security_labels())
    deployment = agent_deployment(sandbox_namespace, IMAGE, 1)
    metadata = {"name": "agent-pod", "namespace": sandbox_namespace}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": deployment["spec"]["template"]["spec"],
    }
    admitted = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert admitted.returncode == 0 and "Warning" not in admitted.stderr, admitted.stderr

    root = {**pod, "metadata": {**pod["metadata"], "name": "root-pod"},
            "spec": {"containers": [{"name": "service", "image": IMAGE}]}}  # fmt: skip
    refused = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(root), check=False)
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr and "runAsNonRoot" in refused.stderr


@pytest.mark.parametrize("real_node", [False, True])
def test_the_pod_drivers_pods_pass_restricted_with_no_secret_but_the_projected_token(
    cluster: LocalCluster, sandbox_namespace: str, real_node: bool
) -> None:
    """The shell Pod and an agent image's Pod, as the API server admits them into a `restricted`
    sandbox: no warning, automounting off, and no volume or variable from a Secret."""
    label(cluster, sandbox_namespace, pod_security_labels())
    cluster.kubectl("create", "serviceaccount", "agent", "-n", sandbox_namespace, check=False)
    shell = shell_pod(sandbox_namespace, "registry.local/agentmatrix/agent-runner:0.1.0", 300, real_node)
    agent = driver_pod(
        sandbox_namespace, "agent-driver", {"containers": [{"name": "agent", "image": IMAGE,
        "securityContext": restricted_container_security_context()}], "securityContext":
        restricted_pod_security_context()}, 300, real_node,
    )  # fmt: skip
    for pod in (shell, agent):
        admitted = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
        assert admitted.returncode == 0 and "Warning" not in admitted.stderr, admitted.stderr
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] == "agent"
        assert not [v for v in spec["volumes"] if "secret" in v]
        assert not [e for c in spec["containers"] for e in c.get("env", []) if "secretKeyRef" in str(e)]
        (projected,) = [v["projected"] for v in spec["volumes"] if "projected" in v]
        assert [next(iter(source)) for source in projected["sources"]] == [
            "serviceAccountToken", "configMap", "downwardAPI"
        ]  # fmt: skip
        assert ("nodeSelector" in spec) is real_node


async def test_the_egress_policies_name_the_api_server_and_the_model_endpoint(
    cluster: LocalCluster, sandbox_namespace: str
) -> None:
    kube = Kube.from_kubeconfig(Path(cluster.kubeconfig))
    try:
        endpoints = await api_server_endpoints(kube)
    finally:
        await kube.close()
    # No controller keeps the local control plane's endpoints: the operator's own address stands in.
    assert endpoints == [("127.0.0.1", int(cluster.server.rsplit(":", 1)[1]))]
    sandbox_policy = network_policy(sandbox_namespace, endpoints)
    model_policy = model_network_policy(sandbox_namespace, "http://127.0.0.1:8089/v1")
    assert model_policy["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": "127.0.0.1/32"}}], "ports": [{"protocol": "TCP", "port": 8089}]}
    ]
    for policy in (sandbox_policy, model_policy):
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(policy))
    stored = json.loads(cluster.kubectl("get", "networkpolicy", "-n", sandbox_namespace, "-o", "json").stdout)
    by_name = {item["metadata"]["name"]: item["spec"] for item in stored["items"]}
    egress = by_name["agentmatrix-egress"]["egress"]
    assert by_name["agentmatrix-egress"]["podSelector"] == {}  # every pod of the sandbox
    assert {rule["to"][0]["ipBlock"]["cidr"] for rule in egress if "ipBlock" in rule["to"][0]} == {
        f"{ip}/32" for ip, _ in endpoints
    }
    assert by_name["agent-driver-model"]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "agent-driver"}
    }
