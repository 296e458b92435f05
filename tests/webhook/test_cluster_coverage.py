"""kill -9 of the webhook in the middle of an agent's sequence: nothing acknowledged is lost, and the
coverage check reports exactly the change made while the webhook was down."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.kube import Kube, KubeAccess
from agentmatrix.measurement.coverage import EffectiveChange, find_gaps, watch_effective_replicas
from agentmatrix.measurement.ledger import read_observations
from agentmatrix.measurement.model import WorkloadKey
from tests.webhook.trial import setup_trial, wait_until_observed
from tests.webhook.webhook_process import running_webhook

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


async def test_kill_9_mid_sequence_and_the_coverage_gap_it_leaves(
    cluster: LocalCluster, sandbox_namespace: str, tmp_path: Path
) -> None:
    ns = sandbox_namespace
    name = f"agentmatrix-webhook-test-{uuid.uuid4().hex[:6]}"
    ledger = tmp_path / "ledger.sqlite3"
    args = ("--register", "observe", "--register-name", name)
    client = Kube(KubeAccess.load(cluster.kubeconfig))
    changes: list[EffectiveChange] = []
    changed = asyncio.Event()

    async def follow() -> None:
        async for change in watch_effective_replicas(client, ns):
            changes.append(change)
            changed.set()

    async def scale(kubeconfig: Path, replicas: int) -> None:
        await asyncio.to_thread(
            cluster.kubectl, "scale", "deployment", "agent", f"--replicas={replicas}", kubeconfig=kubeconfig
        )

    async def effective(replicas: int) -> None:
        agent_key = WorkloadKey("deployments", ns, "agent")
        while not any(c.key == agent_key and c.replicas == replicas for c in changes):
            changed.clear()
            await changed.wait()

    watcher = asyncio.create_task(follow())
    try:
        with running_webhook(tmp_path / "first", *args, ledger=ledger, cluster=cluster) as first:
            agent = await asyncio.to_thread(setup_trial, cluster, ns)
            await asyncio.to_thread(wait_until_observed, cluster, ns, ledger, "observe")
            for replicas in (2, 3):
                await scale(agent, replicas)
            acknowledged = [o.uid for o in read_observations(ledger, ns)]
            first.kill()  # kill -9, its registration left behind, failing open
            await scale(agent, 4)  # goes through unobserved
            await asyncio.wait_for(effective(4), 60)
        with running_webhook(tmp_path / "second", *args, ledger=ledger, cluster=cluster):
            await asyncio.to_thread(wait_until_observed, cluster, ns, ledger, "observe")
            await scale(agent, 5)
            await asyncio.wait_for(effective(5), 60)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await client.close()

    observed = read_observations(ledger, ns)
    assert set(acknowledged) <= {o.uid for o in observed}
    scales = [(o.replicas_before, o.replicas_after) for o in observed if o.target == "deployments/scale"]
    assert scales == [(1, 2), (2, 3), (4, 5)]
    gaps = find_gaps(changes, observed)
    assert [(g.change.key.name, g.change.previous, g.change.replicas) for g in gaps] == [("agent", 3, 4)]
    assert "unobserved change of deployments/agent" in gaps[0].describe()
