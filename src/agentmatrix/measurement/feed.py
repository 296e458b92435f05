"""Background watches that keep `ClusterState` current, and the lookups used on a cache miss.

Watched cluster-wide: sandbox namespaces (label `agentmatrix.dev/sandbox=true`, for their
policy annotations) and nodes (a DaemonSet's replica count). Watched per namespace, only in the
trials' sandboxes and where their agents made objects elsewhere: every workload kind the webhook
counts (to know, for a bare Scale, what the scaled object runs, and for the cap, what the agent
already runs). Objects whose controller is counted (a ReplicaSet's pods, ...) are not kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from agentmatrix.api import names
from agentmatrix.kube import EventHandler, Kube, ListHandler, collection_path
from agentmatrix.measurement.counting import (
    WORKLOADS,
    Footprint,
    MalformedObject,
    controller_counted,
    footprint,
)
from agentmatrix.measurement.model import TrialPolicy, WorkloadKey
from agentmatrix.measurement.state import ClusterState

log = logging.getLogger(__name__)

SANDBOX_SELECTOR = f"{names.LABEL_SANDBOX}=true"
WATCHED_WORKLOADS = (*sorted(WORKLOADS), "horizontalpodautoscalers")
_NEGATIVE_TTL = 5.0
# Workload events are taken in batches at most this often: a burst of them (a scale, its
# ReplicaSet, its pods) then reaches each watch's reader in one delivery, not one per event.
# The admitted footprints cover the delay (state.py).
WATCH_BATCH_SECONDS = 0.1


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def policy_of(namespace: dict[str, Any], evals_namespaces: tuple[str, ...] = ()) -> TrialPolicy | None:
    """The trial policy of a sandbox namespace; None for any other namespace, and, when
    `evals_namespaces` is given, for sandboxes of evals elsewhere (another webhook's trials)."""
    meta = _meta(namespace)
    labels = meta.get("labels") or {}
    if labels.get(names.LABEL_SANDBOX) != "true":
        return None
    if evals_namespaces and labels.get(names.LABEL_EVAL_NAMESPACE) not in evals_namespaces:
        return None
    return TrialPolicy.from_annotations(str(meta.get("name", "")), meta.get("annotations"))


def sandbox_selector(evals_namespaces: tuple[str, ...] = ()) -> str:
    if not evals_namespaces:
        return SANDBOX_SELECTOR
    return f"{SANDBOX_SELECTOR},{names.LABEL_EVAL_NAMESPACE} in ({','.join(sorted(evals_namespaces))})"


class ClusterFeed:
    """Cluster-wide watches of sandbox namespaces and nodes; per namespace in the state's scope
    (the trials' sandboxes, and where their agents made objects elsewhere), one watch per workload
    kind, started when the namespace enters the scope and stopped when it leaves. So the webhook
    reads only the events of its own trials, however busy the rest of the cluster is."""

    def __init__(self, client: Kube, state: ClusterState, *, evals_namespaces: tuple[str, ...] = ()) -> None:
        self.client = client
        self.state = state
        self.evals_namespaces = evals_namespaces
        self._tasks: list[asyncio.Task[None]] = []
        self._scoped: dict[str, list[asyncio.Task[None]]] = {}
        self._pending: set[tuple[str, str]] = set()  # (resource, namespace) not listed yet
        self.synced = asyncio.Event()
        self._not_sandbox: dict[str, float] = {}

    @property
    def watched_namespaces(self) -> set[str]:
        return set(self._scoped)

    def start(self) -> None:
        self._pending = {("namespaces", ""), ("nodes", "")}
        self.state.on_scope_change = self._rescope
        self._tasks.append(self._watch("namespaces", "", sandbox_selector(self.evals_namespaces)))
        self._tasks.append(self._watch("nodes", ""))
        self._rescope()

    async def stop(self) -> None:
        self.state.on_scope_change = None
        tasks = [*self._tasks, *(task for tasks in self._scoped.values() for task in tasks)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._scoped.clear()
        await self.client.close()

    def _watch(self, resource: str, namespace: str, selector: str = "") -> asyncio.Task[None]:
        """Follow `resource` in `namespace` (empty: cluster-wide)."""
        return asyncio.create_task(
            self.client.list_and_watch(
                collection_path(resource, namespace or None),
                self._lister(resource, namespace),
                self._handler(resource),
                label_selector=selector,
                synced=self._synced(resource, namespace),
                batch_seconds=0.0 if resource == "namespaces" else WATCH_BATCH_SECONDS,
            ),
            name="-".join(filter(None, ("watch", resource, namespace))),
        )

    def _rescope(self) -> None:
        """Watch the workloads of every namespace in the state's scope, and of no other."""
        wanted = self.state.scope()
        for namespace in wanted - self._scoped.keys():
            if not self.synced.is_set():
                self._pending.update((resource, namespace) for resource in WATCHED_WORKLOADS)
            self._scoped[namespace] = [self._watch(resource, namespace) for resource in WATCHED_WORKLOADS]
        for namespace in self._scoped.keys() - wanted:
            for task in self._scoped.pop(namespace):
                task.cancel()
            self.state.forget_namespace(namespace)
            self._pending -= {(resource, namespace) for resource in WATCHED_WORKLOADS}
            self._maybe_synced()

    def _synced(self, resource: str, namespace: str) -> Callable[[], None]:
        def done() -> None:
            self._pending.discard((resource, namespace))
            self._maybe_synced()

        return done

    def _maybe_synced(self) -> None:
        if not self._pending and not self.synced.is_set():
            self.state.watching = True
            self.synced.set()

    def _footprint(self, resource: str, obj: dict[str, Any]) -> tuple[WorkloadKey, Footprint | None]:
        meta = _meta(obj)
        key = WorkloadKey(resource, str(meta.get("namespace", "")), str(meta.get("name", "")))
        try:
            if controller_counted(resource, meta):  # most events: pods and ReplicaSets of counted owners
                return key, None
            found = footprint(resource, obj, self.state.node_count, key.namespace)
        except MalformedObject as exc:
            log.warning("ignoring %s: %s", key, exc)
            return key, None
        return key, None if found.owned else found

    def _lister(self, resource: str, namespace: str) -> ListHandler:
        def on_list(items: list[dict[str, Any]]) -> None:
            if resource == "namespaces":
                self.state.replace_policies(
                    p for p in (policy_of(n, self.evals_namespaces) for n in items) if p is not None
                )
            elif resource == "nodes":
                self.state.replace_nodes(str(_meta(n).get("name", "")) for n in items)
            else:
                kept: dict[WorkloadKey, Footprint] = {}
                for obj in items:
                    key, found = self._footprint(resource, obj)
                    if found is not None:
                        kept[key] = found
                self.state.replace_watched(resource, namespace, kept)

        return on_list

    def _handler(self, resource: str) -> EventHandler:
        def on_event(kind: str, obj: dict[str, Any]) -> None:
            gone = kind == "DELETED"
            if resource == "namespaces":
                name = str(_meta(obj).get("name", ""))
                policy = None if gone else policy_of(obj, self.evals_namespaces)
                if policy is None:
                    self.state.drop_policy(name)
                else:
                    self.state.set_policy(policy)
            elif resource == "nodes":
                self.state.set_node(str(_meta(obj).get("name", "")), not gone)
            else:
                key, found = self._footprint(resource, obj)
                self.state.watched(key, None if gone else found)

        return on_event

    # Lookups on a cache miss ----------------------------------------------------------------
    async def namespace_policy(self, namespace: str) -> TrialPolicy | None:
        if self._not_sandbox.get(namespace, 0.0) > time.monotonic():
            return None
        try:
            obj = await self.client.get(collection_path("namespaces") + f"/{namespace}", deadline=1.0)
        except Exception as exc:
            log.warning("namespace lookup of %s failed: %s", namespace, exc)
            return None
        policy = policy_of(obj, self.evals_namespaces) if obj else None
        if policy is None:
            self._not_sandbox[namespace] = time.monotonic() + _NEGATIVE_TTL
        else:
            self.state.set_policy(policy)
        return policy

    async def workload(self, key: WorkloadKey) -> Footprint | None:
        try:
            path = f"{collection_path(key.resource, key.namespace)}/{key.name}"
            obj = await self.client.get(path, deadline=1.0)
        except Exception as exc:
            log.warning("lookup of %s failed: %s", key, exc)
            return None
        if obj is None:
            return None
        try:
            return footprint(key.resource, obj, self.state.node_count, key.namespace)
        except MalformedObject:
            return None
