"""Fixtures of the red-team suite: the real webhook and operator, in a namespace of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.cluster.processes import free_port
from tests.operator.operator_harness import (
    Operator,
    Webhook,
    ensure_namespace,
    install_crd,
    running_operator,
    running_webhook,
)

REDTEAM_NAMESPACE = "redteam-tests"


@pytest.fixture(scope="package")
def webhook(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    install_crd(cluster)
    with running_webhook(cluster, tmp_path_factory.mktemp("webhook")) as running:
        yield running


@pytest.fixture(scope="package")
def operator(
    cluster: LocalCluster, webhook: Webhook, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    ensure_namespace(cluster, REDTEAM_NAMESPACE)
    with running_operator(
        cluster,
        tmp_path_factory.mktemp("operator"),
        webhook.ledger,
        REDTEAM_NAMESPACE,
        metrics_port=free_port(),
    ) as running:
        yield running
