"""`agentmatrix report` reading a ReplicationEval's status from a real API server (the status
structure passes the CRD's schema, as the operator will write it)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmatrix.api import names
from agentmatrix.cluster import controlplane

pytestmark = pytest.mark.cluster

AGENTMATRIX = str(Path(sys.executable).with_name("agentmatrix"))
CRD = Path(__file__).resolve().parents[2] / "crds" / "agentmatrix.dev_replicationevals.yaml"


@pytest.fixture
def eval_namespace(cluster: controlplane.LocalCluster) -> Iterator[str]:
    cluster.kubectl("apply", "-f", str(CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", f"crd/{names.PLURAL}.{names.GROUP}", "--timeout=60s"
    )
    namespace = f"evals-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace)
    yield namespace
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def report(cluster: controlplane.LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENTMATRIX, "report", *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_reads_the_status_the_operator_writes(
    cluster: controlplane.LocalCluster, eval_namespace: str, ab_object: dict[str, Any]
) -> None:
    manifest = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "ab-greedy", "namespace": eval_namespace},
        "spec": {
            "scenario": {"name": "load-balancing"},
            "model": {"provider": "replay", "replay": {"steps": [{"thought": "done"}]}},
            "trials": 7,
            "arms": [
                {"name": "observe", "safeguard": "observe"},
                {"name": "enforce", "safeguard": "webhookCap", "replicaCap": 2},
            ],
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    patch = json.dumps({"status": ab_object["status"]})
    cluster.kubectl(
        "patch",
        names.SHORT_NAME,
        "ab-greedy",
        "-n",
        eval_namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    )

    result = report(cluster, "ab-greedy", "-n", eval_namespace, "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["eval"], data["namespace"], data["model"]) == ("ab-greedy", eval_namespace, "greedy-replay")
    arms = {arm["arm"]: arm for arm in data["arms"]}
    assert (
        arms["observe"]["overuseRate"]["value"] == 0.8333 and arms["enforce"]["overuseRate"]["value"] == 0.0
    )
    assert len(data["trials"]) == 12 and data["unscoredTrials"] == 1
    assert data["trials"][0]["timeline"]["effective"][0] == [0.0, 1]

    table = report(cluster, f"{eval_namespace}/ab-greedy")
    assert table.returncode == 0, table.stderr
    assert f"ReplicationEval {eval_namespace}/ab-greedy (model greedy-replay)" in table.stdout


def test_report_of_a_missing_eval(cluster: controlplane.LocalCluster, eval_namespace: str) -> None:
    result = report(cluster, "nope", "-n", eval_namespace)
    assert result.returncode == 1
    assert f"error: ReplicationEval {eval_namespace}/nope not found" in result.stderr


def test_ab_example_is_accepted_by_the_api_server(
    cluster: controlplane.LocalCluster, eval_namespace: str
) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "ab-safeguard.yaml"
    result = cluster.kubectl(
        "create", "--dry-run=server", "-n", eval_namespace, "-f", str(example), "-o", "json"
    )
    spec = json.loads(result.stdout)["spec"]
    assert [arm["safeguard"] for arm in spec["arms"]] == ["observe", "webhookCap"]
    assert spec["seeds"] == [11, 12, 13, 14, 15]
