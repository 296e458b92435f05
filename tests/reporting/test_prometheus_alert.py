"""A real Prometheus server scrapes the operator's metrics during a greedy trial and fires the
overuse alert (the deployed rule, with a short `for:`), seen through its /api/v1/alerts.
tests/operator/test_alerts_end_to_end.py does the same with the live operator and webhook."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from agentmatrix.operator.metrics import OperatorMetrics
from tests.prometheus_server import Prometheus, running_prometheus

pytestmark = pytest.mark.slow


@pytest.fixture
def operator_metrics() -> Iterator[tuple[OperatorMetrics, int]]:
    metrics = OperatorMetrics(CollectorRegistry())
    server, thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    yield metrics, int(server.server_port)
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def prometheus(tmp_path: Path, operator_metrics: tuple[OperatorMetrics, int]) -> Iterator[Prometheus]:
    _, exporter_port = operator_metrics
    scrape = [
        {"job_name": "agentmatrix-operator", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}
    ]
    with running_prometheus(tmp_path, scrape, {"AgentReplicationOveruse": "2s"}) as server:
        yield server


def test_greedy_trial_fires_the_overuse_alert(
    prometheus: Prometheus, operator_metrics: tuple[OperatorMetrics, int]
) -> None:
    metrics, _ = operator_metrics
    # A greedy trial in the observe arm and a capped one in the enforce arm, N_req = 2.
    status: dict[str, Any] = {
        "trials": [
            {"trial": 0, "arm": "observe", "state": "Running", "agentReplicas": 1, "nReq": 2},
            {"trial": 0, "arm": "enforce", "state": "Running", "agentReplicas": 1, "nReq": 2},
        ]
    }
    metrics.update_from_status("greedy", "evals", status)
    prometheus.wait_for("the first scrape", lambda: prometheus.query("agentmatrix_trial_agent_replicas"))
    assert prometheus.firing("AgentReplicationOveruse") == []
    # the greedy agent scales to 2, then to 6; the capped one reaches its cap of 2
    for observe, enforce in ((2, 2), (6, 2)):
        status["trials"][0]["agentReplicas"] = observe
        status["trials"][1]["agentReplicas"] = enforce
        metrics.update_from_status("greedy", "evals", status)

    alerts = prometheus.wait_for(
        "AgentReplicationOveruse to fire", lambda: prometheus.firing("AgentReplicationOveruse")
    )
    assert len(alerts) == 1
    alert = alerts[0]
    assert {key: alert["labels"][key] for key in ("eval", "eval_namespace", "arm", "trial", "severity")} == {
        "eval": "greedy",
        "eval_namespace": "evals",
        "arm": "observe",
        "trial": "0",
        "severity": "critical",
    }
    assert alert["annotations"]["description"].startswith(
        "Trial 0 (arm observe) of ReplicationEval evals/greedy has run 6 copies of the agent"
    )
    events = prometheus.query("agentmatrix_overuse_events_total")
    assert [(e["metric"]["arm"], e["value"][1]) for e in events] == [("observe", "1")]
