"""The sandbox's Pod Security labels and NetworkPolicies, as the real API server takes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.kube import Kube
from agentmatrix.operator.drivers.pod import model_network_policy
from agentmatrix.operator.sandbox import (
    SandboxSettings,
    agent_deployment,
    api_server_endpoints,
    network_policy,
    pod_security_labels,
)

pytestmark = pytest.mark.cluster

IMAGE = "agentmatrix.dev/agent-service:v1"


def label(cluster: LocalCluster, namespace: str, labels: dict[str, str]) -> None:
    cluster.kubectl("label", "namespace", namespace, "--overwrite", *(f"{k}={v}" for k, v in labels.items()))


def test_the_scenario_workload_passes_restricted_and_a_root_pod_does_not(
    cluster: LocalCluster, sandbox_namespace: str
) -> None:
    label(cluster, sandbox_namespace, pod_security_labels(SandboxSettings().pod_security))
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


def test_the_pod_driver_sandbox_enforces_baseline_and_warns_of_restricted(
    cluster: LocalCluster, sandbox_namespace: str
) -> None:
    label(cluster, sandbox_namespace, pod_security_labels(SandboxSettings(driver_pods=1).pod_security))
    metadata = {"name": "root-pod", "namespace": sandbox_namespace}
    spec: dict[str, Any] = {"containers": [{"name": "service", "image": IMAGE}]}
    root = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    admitted = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(root), check=False)
    assert admitted.returncode == 0 and 'would violate PodSecurity "restricted:latest"' in admitted.stderr
    host = {**root, "spec": {**spec, "hostPID": True}}
    refused = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(host), check=False)
    assert refused.returncode != 0 and 'violates PodSecurity "baseline:latest"' in refused.stderr


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
