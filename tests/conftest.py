"""Fixtures shared by all tests: a real local control plane, and namespaces in it."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmatrix.api import names
from agentmatrix.cluster import binaries, controlplane


@pytest.fixture(scope="session")
def cluster() -> Iterator[controlplane.LocalCluster]:
    """A running local cluster for the whole test session.

    `AGENTMATRIX_TEST_CLUSTER_DIR` names a state directory to reuse (kept running afterwards);
    otherwise a fresh cluster is started in a temporary directory and stopped at the end.
    """
    _, missing = binaries.locate()
    if missing:
        pytest.fail(
            f"control-plane binaries missing ({', '.join(missing)}): run `agentmatrix cluster build` "
            "or the README's test command, which builds them"
        )
    reuse = os.environ.get("AGENTMATRIX_TEST_CLUSTER_DIR")
    if reuse:
        yield controlplane.up(Path(reuse))
        return
    state = Path(tempfile.mkdtemp(prefix="agentmatrix-test-cluster-"))
    try:
        yield controlplane.up(state)
    finally:
        controlplane.down(state)


def create_sandbox_namespace(cluster: controlplane.LocalCluster, prefix: str = "t") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, f"{names.LABEL_SANDBOX}=true")
    return name


@pytest.fixture
def sandbox_namespace(cluster: controlplane.LocalCluster) -> Iterator[str]:
    """A fresh namespace labelled as an agentmatrix sandbox, deleted after the test."""
    name = create_sandbox_namespace(cluster)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
