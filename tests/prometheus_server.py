"""A real Prometheus server (Debian's package) on 127.0.0.1 for tests, with agentmatrix's alert rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmatrix.cluster.processes import free_port
from agentmatrix.reporting import alert_rules

WAIT_SECONDS = 90.0


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            return json.loads(response.read())

    def query(self, expression: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query?query=" + urllib.parse.quote(expression))[
            "data"
        ]["result"]
        return result

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        alerts = self.get("/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = WAIT_SECONDS) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"prometheus exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                result = check()
            except (urllib.error.URLError, ConnectionError):
                result = None
            if result:
                return result
            time.sleep(0.5)
        pytest.fail(f"gave up waiting for {what}:\n{self.log.read_text()[-3000:]}")


@contextmanager
def running_prometheus(
    directory: Path, scrape_configs: list[dict[str, Any]], durations: Mapping[str, str] | None = None
) -> Iterator[Prometheus]:
    """Prometheus scraping and evaluating every second, with the deployed rules (`for:` overridable)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus server is needed: apt-get install -y prometheus (scripts/setup.sh does)")
    rules = directory / "rules.yaml"
    rules.write_text(yaml.safe_dump(alert_rules.plain_rules(durations)))
    config = directory / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": scrape_configs,
            }
        )
    )
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        server.wait_for("prometheus to be ready", lambda: _ready(server.url))
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
