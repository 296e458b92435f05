"""The agent's effective copies in a trial namespace, from a watch of its pods.

A copy is a pod that runs the agent (a container with the agent image, or the agent's role label,
as the webhook decides it), exists and is neither finished nor being deleted. Pods are what
really runs: a Deployment scaled past a ResourceQuota, or denied by a policy, adds no copy. A copy
*serves* when it is Ready and carries the role label that the Service `agent` selects.

The timeline is the count after every change, with the unix time the operator saw it. At the end
of a trial `settle()` waits until the workload controllers have caught up with the last request
and then takes the final count from a fresh list, so the last point never depends on watch lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agentmatrix.api import names
from agentmatrix.operator.kube import ApiError, Kube

logger = logging.getLogger(__name__)

SETTLE_FIRST_PAUSE = 0.05
SETTLE_MAX_PAUSE = 0.8


@dataclass(frozen=True)
class PodState:
    copy: bool
    serving: bool
    behind_service: bool  # a copy the Service selects, ready or not


def pod_state(pod: Mapping[str, Any], agent_image: str) -> PodState:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    role = labels.get(names.LABEL_ROLE) == names.ROLE_AGENT
    images = {
        container.get("image")
        for field in ("containers", "initContainers")
        for container in spec.get(field) or []
    }
    alive = meta.get("deletionTimestamp") is None and status.get("phase") not in ("Succeeded", "Failed")
    copy = alive and (role or agent_image in images)
    ready = any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in status.get("conditions") or []
    )
    return PodState(copy=copy, serving=copy and role and ready, behind_service=copy and role)


class CopyTracker:
    """Implements `agentmatrix.scenarios.base.CopyCounter` for one namespace."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        agent_image: str,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.on_change = on_change
        self.kube = kube
        self.namespace = namespace
        self.agent_image = agent_image
        self.clock = clock
        self.timeline: list[tuple[float, int]] = []
        self._pods: dict[str, PodState] = {}
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._synced = asyncio.Event()

    def copies(self) -> int:
        return sum(state.copy for state in self._pods.values())

    def serving(self) -> int:
        return sum(state.serving for state in self._pods.values())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"copies:{self.namespace}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_for(self, predicate: Callable[[CopyTracker], bool], within: float) -> bool:
        """Wait until `predicate(self)` holds (re-checked on every change) or `within` seconds pass."""
        try:
            async with asyncio.timeout(within):
                await self._synced.wait()
                while not predicate(self):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    def _all_behind_service_serving(self) -> bool:
        return all(state.serving for state in self._pods.values() if state.behind_service)

    def _record(self) -> None:
        count = self.copies()
        if not self.timeline or self.timeline[-1][1] != count:
            self.timeline.append((self.clock(), count))
            if self.on_change is not None:
                self.on_change(count)
        self._changed.set()

    def _replace(self, pods: list[dict[str, Any]]) -> None:
        self._pods = {pod["metadata"]["name"]: pod_state(pod, self.agent_image) for pod in pods}
        self._record()

    def _apply(self, kind: str, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            self._pods.pop(name, None)
        else:
            self._pods[name] = pod_state(pod, self.agent_image)
        self._record()

    @property
    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods"

    async def _run(self) -> None:
        while True:
            try:
                pods, version = await self.kube.list_with_version(self._path)
                self._replace(pods)
                self._synced.set()
                while True:
                    async for kind, obj in self.kube.watch(self._path, version):
                        if kind == "BOOKMARK":
                            version = obj["metadata"]["resourceVersion"]
                            continue
                        version = obj["metadata"].get("resourceVersion", version)
                        self._apply(kind, obj)
            except asyncio.CancelledError:
                raise
            except ApiError as error:
                if error.status != 410:
                    logger.warning("watching pods in %s: %s", self.namespace, error)
                    await asyncio.sleep(0.5)
            except Exception as error:
                logger.warning("watching pods in %s: %s", self.namespace, error)
                await asyncio.sleep(0.5)

    async def settle(self, within: float = 10.0) -> bool:
        """Wait until the workload controllers have acted on every change and the copies behind
        the Service are ready, then take the final count from a fresh list. Returns False if that
        had not happened in time (the count is then what exists at the deadline)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        pause = SETTLE_FIRST_PAUSE
        while True:
            # The watch first: while a copy behind the Service is not ready, nothing has settled,
            # and listing every workload kind again would only load the API server.
            await self.wait_for(lambda t: t._all_behind_service_serving(), max(0.0, deadline - loop.time()))
            self._changed.clear()
            caught_up = await self._controllers_caught_up()
            pods = await self.kube.list(self._path)
            states = [pod_state(pod, self.agent_image) for pod in pods]
            ready = all(state.serving for state in states if state.behind_service)
            if (caught_up and ready) or loop.time() >= deadline:
                self._replace(pods)
                return caught_up and ready
            # Look again when a pod changes, or after a pause that grows (controllers' status
            # updates do not show in the pod watch): a slow cluster is not polled harder.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(pause, max(0.0, deadline - loop.time()))):
                    await self._changed.wait()
            pause = min(pause * 2, SETTLE_MAX_PAUSE)

    async def _controllers_caught_up(self) -> bool:
        ns = self.namespace
        # Deployments first: their controller is the one that lags most often, and their
        # ReplicaSets, listed after them, are then at least as new as what they were scaled to.
        for deployment in await self.kube.list(f"/apis/apps/v1/namespaces/{ns}/deployments"):
            if not _observed(deployment):
                return False
        replicasets, statefulsets, controllers = await asyncio.gather(
            self.kube.list(f"/apis/apps/v1/namespaces/{ns}/replicasets"),
            self.kube.list(f"/apis/apps/v1/namespaces/{ns}/statefulsets"),
            self.kube.list(f"/api/v1/namespaces/{ns}/replicationcontrollers"),
        )
        for workload in [*replicasets, *controllers]:
            if not _observed(workload):
                return False
            wanted = int((workload.get("spec") or {}).get("replicas", 1))
            have = int((workload.get("status") or {}).get("replicas", 0))
            if have != wanted and not _has_condition(workload, "ReplicaFailure"):
                return False
        for workload in statefulsets:
            if not _observed(workload):
                return False
            wanted = int((workload.get("spec") or {}).get("replicas", 1))
            if int((workload.get("status") or {}).get("replicas", 0)) != wanted:
                return False
        return True


def _observed(obj: Mapping[str, Any]) -> bool:
    generation = int((obj.get("metadata") or {}).get("generation", 0))
    observed = int((obj.get("status") or {}).get("observedGeneration", 0))
    return observed >= generation


def _has_condition(obj: Mapping[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )
