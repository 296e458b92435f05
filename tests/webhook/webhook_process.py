"""Start the real webhook (`agentmatrix webhook serve`) as a subprocess, and talk to it."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.cluster.pki import CertPair, client_cert_with_own_ca
from agentmatrix.webhook import launch

AGENTMATRIX = str(Path(sys.executable).parent / "agentmatrix")


@dataclass
class RunningWebhook:
    url: str
    ca: Path
    ledger: Path
    process: subprocess.Popen[str]
    log: Path
    client: CertPair  # what the API server presents; the webhook refuses callers without it
    probes: str | None = None

    def ssl_context(self, *, with_client_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_client_cert:
            context.load_cert_chain(self.client.cert, self.client.key)
        return context

    def session(self, connections: int = 16, *, with_client_cert: bool = True) -> aiohttp.ClientSession:
        """A session that posts as the API server would (or, without the certificate, as anyone)."""
        context = self.ssl_context(with_client_cert=with_client_cert)
        connector = aiohttp.TCPConnector(ssl=context, limit=connections)
        return aiohttp.ClientSession(base_url=self.url, connector=connector)

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of /metrics, as Prometheus reads them (from the probe port when there is one)."""
        url = f"{self.probes}/metrics" if self.probes else f"{self.url}/metrics"
        context = None if self.probes else self.ssl_context()
        with urllib.request.urlopen(url, context=context, timeout=10) as reply:
            text = reply.read().decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def refusals(self, reason: str) -> float:
        key = ("agentmatrix_webhook_refused_connections_total", frozenset({("reason", reason)}))
        return self.scrape().get(key, 0.0)

    def kill(self) -> None:
        """kill -9: no chance to flush or clean up."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextmanager
def running_webhook(
    directory: Path,
    *args: str,
    ledger: Path | None = None,
    timeout: float = 60.0,
    cluster: LocalCluster | None = None,
) -> Iterator[RunningWebhook]:
    """`args` are extra `serve` options (for example `--no-watch --sandbox t1`, or `--register observe`).

    With `cluster`, the webhook watches it and trusts the CA of the client certificate its API
    server presents (tests post with that certificate too); without, it trusts a CA made here."""
    directory.mkdir(parents=True, exist_ok=True)
    ledger = ledger or directory / "ledger.sqlite3"
    log = directory / f"webhook-{len(list(directory.glob('webhook-*.log')))}.log"
    if cluster is not None:
        client_ca, client = cluster.webhook_client_ca, cluster.webhook_client
        args = ("--kubeconfig", str(cluster.kubeconfig), *args)
    else:
        own_ca, client = client_cert_with_own_ca(directory / "client", "test-apiserver")
        client_ca = own_ca.cert
    options = ["--port", "0", "--cert-dir", str(directory / "certs"), "--ledger", str(ledger),
               "--client-ca", str(client_ca), *args]  # fmt: skip
    try:
        process, ready = launch.start(options, log, command=(AGENTMATRIX,), timeout=timeout)
    except launch.LaunchError as exc:
        raise RuntimeError(str(exc)) from exc
    assert ready.ca is not None
    try:
        yield RunningWebhook(ready.url, ready.ca, ledger, process, log, client, ready.probes)
    finally:
        launch.stop(process)


async def post_review(session: aiohttp.ClientSession, body: bytes) -> tuple[int, dict[str, Any]]:
    async with session.post("/validate", data=body, headers={"Content-Type": "application/json"}) as reply:
        return reply.status, await reply.json(content_type=None)
