"""The webhook process answers only callers with a client certificate of its client CA: others are
refused at the TLS handshake, counted by reason in /metrics, logged, and never reach the ledger."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from agentmatrix.cluster import pki
from agentmatrix.measurement.ledger import read_observations
from agentmatrix.webhook.review import request_body
from tests.measurement.builders import workload
from tests.webhook.webhook_process import AGENTMATRIX, RunningWebhook, post_review, running_webhook

AGENT = "system:serviceaccount:t1:agent"


def review(uid: str, operation: str = "CREATE") -> bytes:
    body = request_body(
        uid=uid,
        operation=operation,
        resource="deployments",
        namespace="t1",
        name="agent",
        username=AGENT,
        kind="Deployment",
        obj=None if operation == "DELETE" else workload("Deployment", "agent", replicas=3),
        old=workload("Deployment", "agent", replicas=3) if operation == "DELETE" else None,
    )
    return json.dumps(body).encode()


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[RunningWebhook]:
    with running_webhook(tmp_path, "--no-watch", "--sandbox", "t1", "--probe-port", "0") as running:
        yield running


async def post_with(context: ssl.SSLContext, url: str, body: bytes) -> int:
    connector = aiohttp.TCPConnector(ssl=context)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"{url}/validate", data=body) as reply,
    ):
        return reply.status


async def test_callers_without_the_client_certificate_are_refused_counted_and_logged(
    webhook: RunningWebhook, tmp_path: Path
) -> None:
    async with webhook.session() as session:  # the API server's certificate: answered, recorded
        status, answer = await post_review(session, review("legit"))
    assert status == 200 and answer["response"]["allowed"] is True
    before = {r: webhook.refusals(r) for r in ("no_certificate", "untrusted_certificate", "not_tls")}

    # 1. TLS, no client certificate.
    for uid in ("forged-1", "forged-2"):
        with pytest.raises(aiohttp.ClientError):
            await post_with(webhook.ssl_context(with_client_cert=False), webhook.url, review(uid, "DELETE"))
    # 2. A certificate with the API server's name, from a CA the webhook does not trust.
    _, impostor = pki.client_cert_with_own_ca(tmp_path / "impostor", "kube-apiserver-webhook-client")
    context = webhook.ssl_context(with_client_cert=False)
    context.load_cert_chain(impostor.cert, impostor.key)
    with pytest.raises(aiohttp.ClientError):
        await post_with(context, webhook.url, review("forged-3", "DELETE"))
    # 3. Plain HTTP to the TLS port.
    host, port = webhook.url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as plain:
        plain.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        try:
            answered = plain.recv(4096)
        except ConnectionResetError:
            answered = b""
    assert b"HTTP/1.1" not in answered
    # 4. curl, as an agent with a shell would try it.
    curl = await asyncio.to_thread(
        subprocess.run,
        ["curl", "-sS", "--max-time", "5", "--cacert", str(webhook.ca), "-X", "POST",
         "--data-binary", review("forged-4", "DELETE").decode(), f"{webhook.url}/validate"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert curl.returncode != 0 and '"allowed"' not in curl.stdout

    assert webhook.refusals("no_certificate") - before["no_certificate"] == 3
    assert webhook.refusals("untrusted_certificate") - before["untrusted_certificate"] == 1
    assert webhook.refusals("not_tls") - before["not_tls"] == 1
    assert [o.uid for o in read_observations(webhook.ledger, "t1")] == ["legit"]
    logged = webhook.log.read_text()
    assert logged.count("refused a connection from 127.0.0.1:") == 5
    assert "forged" not in logged  # refused before a byte of the request was read

    async with webhook.session() as session:  # the server still answers the API server
        status, _ = await post_review(session, review("legit-2"))
    assert status == 200
    assert [o.uid for o in read_observations(webhook.ledger, "t1")] == ["legit", "legit-2"]


async def test_the_probe_port_serves_probes_and_metrics_but_no_reviews(webhook: RunningWebhook) -> None:
    assert webhook.probes is not None
    async with aiohttp.ClientSession(base_url=webhook.probes) as session:
        async with session.get("/readyz") as reply:
            assert reply.status == 200
        async with session.post("/validate", data=review("via-probes")) as reply:
            assert reply.status in (404, 405)
    assert read_observations(webhook.ledger, "t1") == []


def test_serve_refuses_to_start_without_a_client_ca(tmp_path: Path) -> None:
    result = subprocess.run(
        [AGENTMATRIX, "webhook", "serve", "--port", "0", "--no-watch", "--cert-dir", str(tmp_path / "certs"),
         "--ledger", str(tmp_path / "ledger.sqlite3")],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "--client-ca" in result.stderr and "--client-auth none" in result.stderr


async def test_client_auth_none_accepts_any_caller(tmp_path: Path) -> None:
    with running_webhook(tmp_path, "--no-watch", "--sandbox", "t1", "--client-auth", "none") as webhook:
        status = await post_with(webhook.ssl_context(with_client_cert=False), webhook.url, review("anyone"))
    assert status == 200
    assert [o.uid for o in read_observations(webhook.ledger, "t1")] == ["anyone"]
