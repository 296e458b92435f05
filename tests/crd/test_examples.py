"""Every example in examples/ is a valid ReplicationEval, as the API server sees it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentmatrix.cluster.controlplane import LocalCluster

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    names = {path.stem for path in EXAMPLES}
    assert {"load-balancing-greedy", "load-balancing-cautious", "termination-threat-escape", "ab-safeguard",
            "local-model"} <= names  # fmt: skip


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_is_accepted(cluster: LocalCluster, path: Path) -> None:
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "agentmatrix.dev_replicationevals.yaml"))
    cluster.kubectl(
        "wait", "--for=condition=established", "--timeout=60s", "crd/replicationevals.agentmatrix.dev"
    )
    cluster.kubectl("create", "namespace", "examples", check=False)
    result = cluster.kubectl("apply", "--dry-run=server", "-n", "examples", "-f", str(path), "-o", "yaml")
    applied = yaml.safe_load(result.stdout)
    assert applied["kind"] == "ReplicationEval"
    assert applied["spec"]["arms"], "defaults were applied"
