"""Coverage check: every effective change in the agent's replicas must have been observed.

The effective side comes from watching the trial's workloads (`watch_effective_replicas`, or any
other watch the operator already runs): each time an object's agent replicas change, that is an
`EffectiveChange`. The observed side is the ledger. A change is covered when an allowed
observation of the same object asked for exactly that change (agent replicas from, to), matched
one to one in order; requests that change nothing (a label, a retried attempt) cover nothing.
Changes the object's status causes (a Job finishing, a Pod exiting) are not requests and need
no observation. Everything else unmatched is a `CoverageGap`, reported, never absorbed:
it means a request changed what runs without the webhook seeing it (the webhook was down in
observe mode, a rule is missing, the webhook was registered too late).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentmatrix.kube import EventHandler, Kube, ListHandler, collection_path
from agentmatrix.measurement.counting import WORKLOADS, MalformedObject, footprint
from agentmatrix.measurement.feed import policy_of
from agentmatrix.measurement.model import Observation, TrialPolicy, WorkloadKey


class WatchObserver(Protocol):
    """Sees one sandbox namespace's share of a list and watch of the workload kinds."""

    def listed(self, resource: str, items: list[dict[str, Any]]) -> None:
        """Every object of `resource` (a plural, e.g. "pods") now, after a (re)list."""

    def changed(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        """One watch event: kind is ADDED, MODIFIED or DELETED."""


@dataclass(frozen=True, slots=True)
class EffectiveChange:
    """Object `key` now runs `replicas` agent replicas (0: gone, or not the agent), `previous` before."""

    key: WorkloadKey
    previous: int
    replicas: int
    time: float
    by_status: bool = False  # caused by the object's status (finished), not by a request


@dataclass(frozen=True, slots=True)
class CoverageGap:
    change: EffectiveChange

    def describe(self) -> str:
        c = self.change
        return (
            f"unobserved change of {c.key}: agent replicas {c.previous} -> {c.replicas} "
            "with no matching admission observation"
        )


def find_gaps(changes: Iterable[EffectiveChange], observations: Sequence[Observation]) -> list[CoverageGap]:
    """Changes (in the order they happened) that no allowed observation accounts for."""
    by_key: dict[WorkloadKey, list[Observation]] = {}
    for obs in observations:
        if obs.allowed and obs.counted and obs.replicas_before != obs.replicas_after:
            by_key.setdefault(obs.key, []).append(obs)
    cursor: dict[WorkloadKey, int] = {}
    gaps: list[CoverageGap] = []
    for change in changes:
        if change.by_status or change.replicas == change.previous:
            continue
        candidates = by_key.get(change.key, [])
        start = cursor.get(change.key, 0)
        match = next(
            (
                i
                for i in range(start, len(candidates))
                if (candidates[i].replicas_before, candidates[i].replicas_after)
                == (change.previous, change.replicas)
            ),
            None,
        )
        if match is None:
            gaps.append(CoverageGap(change))
        else:
            cursor[change.key] = match + 1
    return gaps


def _agent_replicas(resource: str, obj: Mapping[str, Any], policy: TrialPolicy, nodes: int) -> int | None:
    """Agent replicas `obj` runs; None when its controller is what counts (owned objects)."""
    found = footprint(resource, obj, nodes, policy.namespace)
    if found.owned:
        return None
    return found.replicas if found.runs_agent(policy.agent_image) else 0


@dataclass
class _Tracker:
    policy: TrialPolicy
    nodes: int
    current: dict[WorkloadKey, int] = field(default_factory=dict)
    spec_only: dict[WorkloadKey, int] = field(default_factory=dict)

    def update(self, resource: str, obj: Mapping[str, Any], gone: bool) -> EffectiveChange | None:
        meta = obj.get("metadata") or {}
        key = WorkloadKey(resource, self.policy.namespace, str(meta.get("name", "")))
        try:
            now = 0 if gone else _agent_replicas(resource, obj, self.policy, self.nodes)
            without_status = {k: v for k, v in obj.items() if k != "status"}
            spec_now = 0 if gone else _agent_replicas(resource, without_status, self.policy, self.nodes)
        except MalformedObject:
            return None
        if now is None or spec_now is None:
            return None
        previous = self.current.get(key, 0)
        spec_previous = self.spec_only.get(key, 0)
        self.current[key] = now
        self.spec_only[key] = spec_now
        if gone:
            self.current.pop(key, None)
            self.spec_only.pop(key, None)
        if now == previous:
            return None
        return EffectiveChange(key, previous, now, time.time(), by_status=spec_now == spec_previous)


class CoverageFollower:
    """The effective side of one sandbox namespace, as a `WatchObserver` of its workloads: every
    change of an object's agent replicas goes to `changes` (and `on_change`); every list and event
    is passed on to `observer`.

    Objects listed first are changes from 0, so feed it from before the trial's first workload is
    created (or drop those first changes).
    """

    def __init__(
        self,
        policy: TrialPolicy,
        node_count: int,
        *,
        observer: WatchObserver | None = None,
        on_change: Callable[[EffectiveChange], None] | None = None,
    ) -> None:
        self.changes: list[EffectiveChange] = []
        self._tracker = _Tracker(policy, node_count)
        self._observer = observer
        self._on_change = on_change
        self._seen: dict[str, set[str]] = {}

    def listed(self, resource: str, items: list[dict[str, Any]]) -> None:
        names = {str((i.get("metadata") or {}).get("name", "")) for i in items}
        for name in self._seen.get(resource, set()) - names:
            self._update(resource, "DELETED", {"metadata": {"name": name}})
        self._seen[resource] = names
        for item in items:
            self._update(resource, "ADDED", item)
        if self._observer is not None:
            self._observer.listed(resource, items)

    def changed(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        self._update(resource, kind, obj)
        if self._observer is not None:
            self._observer.changed(resource, kind, obj)

    def _update(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        change = self._tracker.update(resource, obj, kind == "DELETED")
        if change is not None:
            self.changes.append(change)
            if self._on_change is not None:
                self._on_change(change)


async def watch_effective_replicas(
    client: Kube,
    namespace: str,
    *,
    node_count: int | None = None,
    policy: TrialPolicy | None = None,
    observer: WatchObserver | None = None,
) -> AsyncIterator[EffectiveChange]:
    """Follow the agent replicas of every workload in the sandbox `namespace` with a watch of its
    own, yielding each change (see `CoverageFollower`). `policy` is the trial's (read from the
    namespace if not given)."""
    if policy is None:
        ns = await client.get(collection_path("namespaces") + f"/{namespace}")
        policy = (policy_of(ns) if ns else None) or TrialPolicy(namespace)
    if node_count is None:
        node_count = len(await client.list(collection_path("nodes")))
    queue: asyncio.Queue[EffectiveChange] = asyncio.Queue()
    follower = CoverageFollower(policy, node_count, observer=observer, on_change=queue.put_nowait)

    def lister(resource: str) -> ListHandler:
        return lambda items: follower.listed(resource, items)

    def handler(resource: str) -> EventHandler:
        return lambda kind, obj: follower.changed(resource, kind, obj)

    tasks = [
        asyncio.create_task(
            client.list_and_watch(collection_path(resource, namespace), lister(resource), handler(resource))
        )
        for resource in sorted(WORKLOADS)
    ]
    try:
        while True:
            yield await queue.get()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
