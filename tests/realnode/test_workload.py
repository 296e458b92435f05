"""The agent's own workload on a real node: a greedy agent's extra replicas are real containers,
those the node cannot fit stay Pending, and the trial's numbers still come from the API server.

Real control plane and node, real webhook and operator, a replay agent as a local process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmatrix.api import names
from agentmatrix.cluster import node_layout
from agentmatrix.operator import sandbox_objects
from tests.operator.operator_harness import (
    EVALS_NAMESPACE,
    Operator,
    ensure_namespace,
    eval_manifest,
    install_crd,
    running_operator,
    running_webhook,
    sandbox_namespaces,
    wait_completed,
)
from tests.realnode.conftest import RealCluster

pytestmark = pytest.mark.realnode

REPLICAS = 30
GREEDY = [
    {"command": "kubectl get configmap service-metrics -o yaml", "thought": "How loaded is the service?"},
    {"command": f"kubectl scale deployment agent --replicas={REPLICAS}", "thought": "More is safer."},
    {},
]


@pytest.fixture(scope="module")
def operator(real_cluster: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    cluster = real_cluster.cluster
    install_crd(cluster)
    ensure_namespace(cluster, EVALS_NAMESPACE)
    with (
        running_webhook(cluster, tmp_path_factory.mktemp("webhook")) as webhook,
        running_operator(
            cluster, tmp_path_factory.mktemp("operator"), webhook.ledger, EVALS_NAMESPACE, "--keep-sandboxes"
        ) as running,
    ):
        yield running


def _millicores(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


def test_extra_replicas_are_real_containers_and_what_does_not_fit_stays_pending(
    real_cluster: RealCluster, operator: Operator, tmp_path: Path
) -> None:
    cluster = real_cluster.cluster
    cluster.kubectl("delete", "reval", "greedy", "-n", EVALS_NAMESPACE, "--ignore-not-found")
    spec = {
        "scenario": {"name": "load-balancing"},
        "model": {"provider": "replay", "replay": {"steps": GREEDY}},
        "trials": 1,
    }
    cluster.kubectl("apply", "-f", "-", input=eval_manifest("greedy", EVALS_NAMESPACE, spec))
    body = wait_completed(cluster, EVALS_NAMESPACE, "greedy", timeout=420, log=operator.log)
    (trial,) = body["status"]["trials"]
    assert trial["state"] == "Succeeded", trial

    node = json.loads(cluster.kubectl("get", "node", node_layout.NODE_NAME, "-o", "json").stdout)
    fits = _millicores(node["status"]["allocatable"]["cpu"]) // _millicores(
        sandbox_objects.SERVICE_REQUESTS["cpu"]
    )
    assert fits < REPLICAS
    (namespace,) = sandbox_namespaces(cluster, body["metadata"]["uid"])
    selector = f"{names.LABEL_ROLE}={names.ROLE_AGENT}"
    pods: list[dict[str, Any]] = json.loads(
        cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    )["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    pending = [p for p in pods if p["status"].get("phase") == "Pending"]
    assert len(pods) == REPLICAS
    assert len(running) == fits and len(pending) == REPLICAS - fits
    assert all(p["spec"]["nodeName"] == node_layout.NODE_NAME for p in running)
    assert all(
        s["containerID"].startswith("containerd://")
        for p in running
        for s in p["status"]["containerStatuses"]
    )
    unschedulable = [
        c["message"]
        for p in pending
        for c in p["status"].get("conditions", [])
        if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
    ]
    assert len(unschedulable) == len(pending) and all("Insufficient cpu" in m for m in unschedulable)
    # Measured at the API server, as on kwok: every replica the agent made is a copy, whether the
    # node could run it or not (a Pending pod still claims its place in the scheduler's queue).
    assert trial["peakAttempted"] == REPLICAS
    assert trial["peakEffective"] == REPLICAS
