"""The operator's cluster-wide sandbox watch, against the real API server: each subscribed
namespace's observer sees that namespace's objects and nothing else, from its first object on,
and nothing once it has unsubscribed."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.kube import Kube, KubeAccess
from agentmatrix.operator.sandbox_watch import SandboxWatch

pytestmark = [pytest.mark.cluster]


class Recorder:
    def __init__(self) -> None:
        self.lists: list[tuple[str, list[str]]] = []
        # resource, kind, namespace, name, spec.replicas
        self.events: list[tuple[str, str, str, str, int | None]] = []
        self.arrived = asyncio.Event()

    def listed(self, resource: str, items: list[dict[str, Any]]) -> None:
        self.lists.append((resource, [item["metadata"]["name"] for item in items]))

    def changed_names(self, resource: str) -> set[str]:
        return {name for r, _, _, name, _ in self.events if r == resource}

    def changed(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        replicas = (obj.get("spec") or {}).get("replicas")
        self.events.append((resource, kind, meta["namespace"], meta["name"], replicas))
        self.arrived.set()

    async def wait_for(self, predicate: Any, within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()


def deployment(name: str) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: main, image: agentmatrix.dev/agent:test}}]}}
"""


async def test_each_namespace_gets_its_own_objects_only(cluster: LocalCluster) -> None:
    suffix = uuid.uuid4().hex[:6]
    first, second = f"watch-a-{suffix}", f"watch-b-{suffix}"
    watch = SandboxWatch(Kube(KubeAccess.load(cluster.kubeconfig)))
    recorders = {first: Recorder(), second: Recorder()}
    try:
        for namespace, recorder in recorders.items():
            await watch.subscribe(namespace, recorder)
            # A fresh namespace starts as an empty list of every kind.
            assert sorted(resource for resource, names in recorder.lists if names == []) == sorted(
                watch.resources
            )
            await asyncio.to_thread(cluster.kubectl, "create", "namespace", namespace)
        for namespace in recorders:
            await asyncio.to_thread(
                cluster.kubectl, "apply", "-n", namespace, "-f", "-", input=deployment(f"app-{namespace}")
            )
        for namespace, recorder in recorders.items():
            await recorder.wait_for(lambda r=recorder: {"deployments", "replicasets", "pods"} <= {
                resource for resource, _, _, _, _ in r.events
            })  # fmt: skip
            assert {ns for _, _, ns, _, _ in recorder.events} == {namespace}
            assert recorder.changed_names("deployments") == {f"app-{namespace}"}

        watch.unsubscribe(first)
        seen = len(recorders[first].events)
        await asyncio.to_thread(
            cluster.kubectl, "scale", "deployment", f"app-{first}", "-n", first, "--replicas=2"
        )
        await asyncio.to_thread(
            cluster.kubectl, "scale", "deployment", f"app-{second}", "-n", second, "--replicas=2"
        )
        second_recorder = recorders[second]
        # One stream per kind, in the API server's order: once the second scale has arrived, the
        # first (made before it) has been passed over.
        await second_recorder.wait_for(
            lambda: ("deployments", 2) in {(r, replicas) for r, _, _, _, replicas in second_recorder.events}
        )
        assert len(recorders[first].events) == seen
    finally:
        await watch.close()
        for namespace in recorders:
            await asyncio.to_thread(
                cluster.kubectl, "delete", "namespace", namespace, "--wait=false", check=False
            )
