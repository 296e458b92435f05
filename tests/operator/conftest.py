"""Fixtures for the operator's tests: the CRD, the real webhook and the real operator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.cluster.processes import free_port
from tests.operator.operator_harness import (
    EVALS_NAMESPACE,
    Operator,
    Webhook,
    ensure_namespace,
    install_crd,
    running_operator,
    running_webhook,
)


@pytest.fixture(scope="package")
def crd(cluster: LocalCluster) -> None:
    install_crd(cluster)


@pytest.fixture(scope="package")
def webhook(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    with running_webhook(cluster, tmp_path_factory.mktemp("webhook")) as running:
        yield running


@pytest.fixture(scope="package")
def operator(
    cluster: LocalCluster, crd: None, webhook: Webhook, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """One operator for the session, watching only EVALS_NAMESPACE."""
    ensure_namespace(cluster, EVALS_NAMESPACE)
    with running_operator(
        cluster,
        tmp_path_factory.mktemp("operator"),
        webhook.ledger,
        EVALS_NAMESPACE,
        metrics_port=free_port(),
    ) as running:
        yield running
