"""The agent's effective copies in a trial namespace, from a watch of its pods.

A copy is a pod that runs the agent (a container with the agent image, or the agent's role label,
as the webhook decides it), exists and is neither finished nor being deleted. Pods are what
really runs: a Deployment scaled past a ResourceQuota, or denied by a policy, adds no copy. A copy
*serves* when it is Ready and carries the role label that the Service `agent` selects.

The tracker is a `WatchObserver`: the operator's shared sandbox watch feeds it, through the
trial's coverage follower, the pods for the count and the workload controllers' objects for
`settle()`.
The timeline is the count after every change, with the unix time the operator saw it. At the end
of a trial `settle()` waits until the watches show the workload controllers caught up with the
last request and every copy behind the Service ready, then confirms with one round of fresh lists
that the watches were not behind, so the last point never depends on watch lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agentmatrix.api import names
from agentmatrix.kube import Kube, collection_path

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
        self._workloads: dict[str, dict[str, dict[str, Any]]] = {}  # resource -> name -> object
        self._changed = asyncio.Event()
        self._synced = asyncio.Event()

    def copies(self) -> int:
        return sum(state.copy for state in self._pods.values())

    def serving(self) -> int:
        return sum(state.serving for state in self._pods.values())

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

    # --- WatchObserver ------------------------------------------------------------------------
    def listed(self, resource: str, items: list[dict[str, Any]]) -> None:
        if resource == "pods":
            self._replace(items)
            self._synced.set()
        elif resource in CONTROLLER_RESOURCES:
            workloads = self._workloads.setdefault(resource, {})
            workloads.clear()
            workloads.update((str(item["metadata"]["name"]), item) for item in items)
            self._changed.set()

    def changed(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        if resource == "pods":
            self._apply(kind, obj)
        elif resource in CONTROLLER_RESOURCES:
            workloads = self._workloads.setdefault(resource, {})
            name = str(obj["metadata"]["name"])
            if kind == "DELETED":
                workloads.pop(name, None)
            else:
                workloads[name] = obj
            self._changed.set()

    def _watched_controllers_caught_up(self) -> bool:
        return controllers_caught_up(
            *(list(self._workloads.get(resource, {}).values()) for resource in CONTROLLER_RESOURCES)
        )

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

    async def settle(self, within: float = 10.0) -> bool:
        """Wait until the workload controllers have acted on every change and the copies behind
        the Service are ready, and confirm it against fresh lists. Returns False if that had not
        happened in time (the count is then what the lists show at the deadline)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        pause = SETTLE_FIRST_PAUSE
        while True:
            # The watches first: until they show every controller caught up and every copy behind
            # the Service ready, nothing has settled, and listing would only load the API server.
            await self.wait_for(self._settled, max(0.0, deadline - loop.time()))
            self._changed.clear()
            settled, watched = self._settled(self), self._watched_view()
            lists = [self.kube.list(collection_path(kind, self.namespace)) for kind in SETTLE_RESOURCES]
            listed = dict(zip(SETTLE_RESOURCES, await asyncio.gather(*lists), strict=True))
            # The lists were taken after the watches showed everything settled. Where they agree
            # with the watches kind by kind (on what the count and the controllers' progress depend
            # on), no watch was behind: a controller that had acted before was seen acting, and
            # what it made before was seen. So the watched count is final.
            if settled and watched == self._view_of(listed):
                return True
            if loop.time() >= deadline:
                self._replace(listed["pods"])
                states = [pod_state(pod, self.agent_image) for pod in listed["pods"]]
                return controllers_caught_up(
                    *(listed[resource] for resource in CONTROLLER_RESOURCES)
                ) and all(state.serving for state in states if state.behind_service)
            # The watches were behind the lists, or things are still changing: look again when a
            # watch catches up, or after a pause that grows: a slow cluster is not polled harder.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(pause, max(0.0, deadline - loop.time()))):
                    await self._changed.wait()
            pause = min(pause * 2, SETTLE_MAX_PAUSE)

    @staticmethod
    def _settled(tracker: CopyTracker) -> bool:
        return tracker._all_behind_service_serving() and tracker._watched_controllers_caught_up()

    def _watched_view(self) -> dict[str, dict[str, Any]]:
        workloads = {kind: self._workloads.get(kind, {}).values() for kind in CONTROLLER_RESOURCES}
        return _settle_view(dict(self._pods), workloads)

    def _view_of(self, listed: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
        pods = {pod["metadata"]["name"]: pod_state(pod, self.agent_image) for pod in listed["pods"]}
        return _settle_view(pods, listed)


# The workload kinds whose controllers settle() waits for, in controllers_caught_up's order.
CONTROLLER_RESOURCES = ("deployments", "replicasets", "statefulsets", "replicationcontrollers")
SETTLE_RESOURCES = ("pods", *CONTROLLER_RESOURCES)


def _settle_view(
    pods: dict[str, PodState], workloads: Mapping[str, Iterable[Mapping[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """What settling compares between the watches and the lists: each pod's state, and each
    workload controller's progress."""
    view: dict[str, dict[str, Any]] = {"pods": pods}
    for resource in CONTROLLER_RESOURCES:
        view[resource] = progress = {}
        for obj in workloads[resource]:
            progress[obj["metadata"]["name"]] = controller_progress(resource, obj)
    return view


def controller_progress(resource: str, obj: Mapping[str, Any]) -> tuple[int, ...]:
    """What `controllers_caught_up` reads of a workload controller's object: its generation and the
    generation its controller observed; for those that make pods, also the replicas wanted and
    made, and whether it reports failing to make them."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    generations = (int(meta.get("generation", 0)), int(status.get("observedGeneration", 0)))
    if resource == "deployments":
        return generations
    replicas = (int(spec.get("replicas", 1)), int(status.get("replicas", 0)))
    return (*generations, *replicas, int(_has_condition(obj, "ReplicaFailure")))


def controllers_caught_up(
    deployments: list[dict[str, Any]],
    replicasets: list[dict[str, Any]],
    statefulsets: list[dict[str, Any]],
    controllers: list[dict[str, Any]],
) -> bool:
    """Every controller has seen its object's last change and made the replicas it wants (or
    reported why it cannot)."""
    if not all(_observed(deployment) for deployment in deployments):
        return False
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
