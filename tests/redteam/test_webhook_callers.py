"""The webhook from the host, as a hostile agent would try it, against the real API server and the
real webhook process: forged reviews are refused before they are read, counted in the metric a
Prometheus scrape sees, and change no ledger; a neighbouring evaluation's webhook records none of
this evaluation's namespaces."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from agentmatrix.api import names
from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.measurement.ledger import read_observations
from agentmatrix.measurement.model import Observation
from agentmatrix.webhook.review import request_body
from tests.conftest import create_sandbox_namespace
from tests.webhook.trial import agent_deployment, setup_trial, wait_for, wait_until_observed
from tests.webhook.webhook_process import RunningWebhook, post_review, running_webhook

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

OURS, NEIGHBOURS = "redteam-evals", "neighbour-evals"


@pytest.fixture(scope="module")
def webhook(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWebhook]:
    """This evaluation's webhook: registered, recording only sandboxes of evals in OURS."""
    name = f"agentmatrix-redteam-{uuid.uuid4().hex[:6]}"
    with running_webhook(
        tmp_path_factory.mktemp("ours"), "--register", "observe", "--register-name", name,
        "--evals-namespace", OURS, "--probe-port", "0", cluster=cluster,
    ) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="module")
def neighbour(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWebhook]:
    """Another evaluation's webhook on the same cluster, with its own ledger."""
    name = f"agentmatrix-neighbour-{uuid.uuid4().hex[:6]}"
    with running_webhook(
        tmp_path_factory.mktemp("neighbour"), "--register", "observe", "--register-name", name,
        "--evals-namespace", NEIGHBOURS, "--probe-port", "0", cluster=cluster,
    ) as running:  # fmt: skip
        yield running


@pytest.fixture
def trial(cluster: LocalCluster, webhook: RunningWebhook) -> Iterator[tuple[str, Path]]:
    """A sandbox of an eval in OURS, its agent's Deployment observed; (namespace, agent kubeconfig)."""
    namespace = create_sandbox_namespace(cluster, "redteam")
    cluster.kubectl("label", "namespace", namespace, f"{names.LABEL_EVAL_NAMESPACE}={OURS}")
    agent = setup_trial(cluster, namespace)
    wait_until_observed(cluster, namespace, webhook.ledger, "observe")
    yield namespace, agent
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def forged_delete(namespace: str) -> bytes:
    """What would wipe the agent's copies from the counts: a DELETE of its Deployment."""
    deployment = agent_deployment(3)
    deployment["metadata"]["namespace"] = namespace
    body = request_body(
        uid=f"forged-{uuid.uuid4()}", operation="DELETE", resource="deployments", namespace=namespace,
        name=names.AGENT_DEPLOYMENT, username=f"system:serviceaccount:{namespace}:agent",
        kind="Deployment", old=deployment,
    )  # fmt: skip
    return json.dumps(body).encode()


def everything(ledger: Path) -> list[Observation]:
    return read_observations(ledger)


def settled(ledgers: list[Path], quiet: float = 3.0) -> dict[Path, list[Observation]]:
    """The ledgers once the cluster's own follow-up requests (the ReplicaSet a scale updates, its
    pods) have all been recorded: nothing new for `quiet` seconds."""
    last: dict[Path, list[Observation]] = {}
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet:
        now = {ledger: everything(ledger) for ledger in ledgers}
        if now != last:
            last, quiet_since = now, time.monotonic()
        time.sleep(0.2)
    return last


def scaled_to(ledger: Path, namespace: str, replicas: int) -> bool:
    return any(
        o.subresource == "scale" and o.replicas_after == replicas
        for o in read_observations(ledger, namespace)
    )


async def test_forged_reviews_from_the_host_are_refused_counted_and_change_no_ledger(
    cluster: LocalCluster,
    webhook: RunningWebhook,
    neighbour: RunningWebhook,
    trial: tuple[str, Path],
) -> None:
    namespace, agent = trial
    cluster.kubectl("scale", "deployment", "agent", "--replicas=3", kubeconfig=agent)
    wait_for(lambda: scaled_to(webhook.ledger, namespace, 3), "the webhook to record the agent's scale")
    ledgers = await asyncio.to_thread(settled, [webhook.ledger, neighbour.ledger])
    refused_before = {
        reason: webhook.refusals(reason) for reason in ("no_certificate", "untrusted_certificate")
    }

    forged = forged_delete(namespace)
    # 1. aiohttp, no client certificate.
    async with webhook.session(with_client_cert=False) as session:
        with pytest.raises(aiohttp.ClientError):
            await post_review(session, forged)
    # 2. curl, no client certificate, to both webhooks.
    for hook in (webhook, neighbour):
        curl = await asyncio.to_thread(
            subprocess.run,
            ["curl", "-sS", "--max-time", "5", "--cacert", str(hook.ca), "-X", "POST", "-H",
             "Content-Type: application/json", "--data-binary", forged.decode(), f"{hook.url}/validate"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert curl.returncode != 0 and '"allowed"' not in curl.stdout, curl
    # 3. The cluster admin's certificate: the API server trusts it, the webhook does not.
    pki = cluster.state_dir / "pki"
    context = ssl.create_default_context(cafile=str(webhook.ca))
    context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    async with aiohttp.ClientSession(
        base_url=webhook.url, connector=aiohttp.TCPConnector(ssl=context)
    ) as session:
        with pytest.raises(aiohttp.ClientError):
            await post_review(session, forged)

    assert {hook.ledger: everything(hook.ledger) for hook in (webhook, neighbour)} == ledgers
    assert not [o for o in everything(webhook.ledger) if o.uid.startswith("forged-")]
    assert webhook.refusals("no_certificate") - refused_before["no_certificate"] == 2
    assert webhook.refusals("untrusted_certificate") - refused_before["untrusted_certificate"] == 1
    assert neighbour.refusals("no_certificate") >= 1
    assert "refused a connection from 127.0.0.1:" in webhook.log.read_text()

    # The API server's own certificate still passes: the agent's next step is recorded.
    cluster.kubectl("scale", "deployment", "agent", "--replicas=2", kubeconfig=agent)
    wait_for(lambda: scaled_to(webhook.ledger, namespace, 2), "the webhook to record the next scale")


async def test_a_neighbouring_webhook_records_none_of_this_evaluations_namespaces(
    cluster: LocalCluster,
    webhook: RunningWebhook,
    neighbour: RunningWebhook,
    trial: tuple[str, Path],
) -> None:
    namespace, agent = trial
    cluster.kubectl("scale", "deployment", "agent", "--replicas=4", kubeconfig=agent)
    wait_for(lambda: scaled_to(webhook.ledger, namespace, 4), "this evaluation's webhook to record the scale")
    assert read_observations(neighbour.ledger, namespace) == []

    # Even sent straight to it with the API server's certificate, a review for a namespace of
    # another evaluation's trial (or by that trial's agent elsewhere) is answered, not recorded.
    untracked = 'agentmatrix_webhook_requests_total{decision="untracked"'
    async with neighbour.session() as session:
        for body in (forged_delete(namespace), forged_delete("default")):
            review = json.loads(body)
            review["request"]["userInfo"]["username"] = f"system:serviceaccount:{namespace}:agent"
            status, answer = await post_review(session, json.dumps(review).encode())
            assert status == 200 and answer["response"]["allowed"] is True
        async with session.get("/metrics") as reply:
            metrics = await reply.text()
    assert read_observations(neighbour.ledger) == []
    assert (
        sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(untracked)) >= 2
    )
