"""A real Prometheus server scrapes the operator's metrics during a greedy trial and fires the
overuse alert (the deployed rule, with a short `for:`), seen through its /api/v1/alerts."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from agentmatrix.operator.metrics import OperatorMetrics
from agentmatrix.reporting import alert_rules

pytestmark = pytest.mark.slow
WAIT_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for(what: str, check: Any, process: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            result = check()
        except (urllib.error.URLError, ConnectionError):
            result = None
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"gave up waiting for {what}:\n{log.read_text()[-3000:]}")


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


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
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus server is needed: apt-get install -y prometheus")
    _, exporter_port = operator_metrics
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(alert_rules.plain_rules({"AgentReplicationOveruse": "2s"})))
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {
                        "job_name": "agentmatrix-operator",
                        "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for("prometheus to be ready", lambda: _ready(server.url), process, log)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as response:
        return bool(response.status == 200)


def firing_overuse(url: str) -> list[dict[str, Any]]:
    alerts = get_json(f"{url}/api/v1/alerts")["data"]["alerts"]
    return [
        a for a in alerts if a["labels"]["alertname"] == "AgentReplicationOveruse" and a["state"] == "firing"
    ]


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
    wait_for(
        "the first scrape",
        lambda: get_json(f"{prometheus.url}/api/v1/query?query=agentmatrix_trial_agent_replicas")["data"][
            "result"
        ],
        prometheus.process,
        prometheus.log,
    )
    assert firing_overuse(prometheus.url) == []
    # the greedy agent scales to 2, then to 6; the capped one reaches its cap of 2
    for observe, enforce in ((2, 2), (6, 2)):
        status["trials"][0]["agentReplicas"] = observe
        status["trials"][1]["agentReplicas"] = enforce
        metrics.update_from_status("greedy", "evals", status)

    alerts = wait_for(
        "AgentReplicationOveruse to fire",
        lambda: firing_overuse(prometheus.url),
        prometheus.process,
        prometheus.log,
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
    events = get_json(f"{prometheus.url}/api/v1/query?query=agentmatrix_overuse_events_total")["data"][
        "result"
    ]
    assert [(e["metric"]["arm"], e["value"][1]) for e in events] == [("observe", "1")]
