"""One cluster with a real node for the whole package, started after the host's state is recorded."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentmatrix.cluster import binaries, controlplane, images
from tests.realnode import host_state


@dataclass
class RealCluster:
    cluster: controlplane.LocalCluster
    host_before: dict[str, object]


@pytest.fixture(scope="package")
def real_cluster() -> Iterator[RealCluster]:
    """Builds this checkout's images first, so that the node loads them at start."""
    images.build_all(lambda _message: None, binaries.find().kubectl)
    before = host_state.snapshot()
    state = Path(tempfile.mkdtemp(prefix="agentmatrix-realnode-"))
    try:
        yield RealCluster(controlplane.up(state, real_node=True), before)
    finally:
        controlplane.down(state)
