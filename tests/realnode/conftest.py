"""One cluster with a real node for the whole package, started after the host's state is recorded."""

from __future__ import annotations

import os
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
    """Builds this checkout's images first (unless the cache holds them, built from this checkout
    as it is), so that the node loads them at start."""
    if os.geteuid() != 0:
        pytest.skip("a real node needs root (CI runs as root)")
    if images.outdated():
        images.build_all(lambda _message: None, binaries.find().kubectl)
    assert images.outdated() == []
    before = host_state.snapshot()
    state = Path(tempfile.mkdtemp(prefix="agentmatrix-realnode-"))
    try:
        yield RealCluster(controlplane.up(state, real_node=True), before)
    finally:
        controlplane.down(state)


LAST = "test_down_leaves_the_host_as_it_found_it"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The test that stops the cluster and compares the host runs after every other test of this
    package (and before any other package's, so that the package's cluster is set up once)."""
    last = [item for item in items if item.name == LAST]
    if not last:
        return
    items.remove(last[0])
    here = [i for i, item in enumerate(items) if item.nodeid.startswith("tests/realnode/")]
    items.insert(here[-1] + 1 if here else len(items), last[0])
