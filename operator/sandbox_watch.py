"""One cluster-wide watch per workload kind, shared by every running trial.

A trial subscribes its sandbox namespace before creating it; from then on its observer gets the
namespace's share of every (re)list and every event of every kind. A namespace created after
subscribing holds nothing yet, so each kind starts as an empty list for it. One list and one
watch per kind for the whole operator, instead of eight per running trial, keeps the requests
and connections the operator needs independent of parallelism.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from agentmatrix.kube import EventHandler, Kube, ListHandler, collection_path
from agentmatrix.measurement.counting import WORKLOADS
from agentmatrix.measurement.coverage import WatchObserver

logger = logging.getLogger(__name__)

FIRST_LIST_SECONDS = 30.0


class SandboxWatch:
    def __init__(self, client: Kube, resources: Sequence[str] = tuple(sorted(WORKLOADS))) -> None:
        self.client = client
        self.resources = tuple(resources)
        self._observers: dict[str, WatchObserver] = {}
        self._listed = {resource: asyncio.Event() for resource in self.resources}
        self._tasks: list[asyncio.Task[None]] = []

    async def subscribe(self, namespace: str, observer: WatchObserver) -> None:
        """Route `namespace`'s objects to `observer` from now on (call it before the namespace
        exists). Raises TimeoutError if a kind could not be listed within FIRST_LIST_SECONDS."""
        self._start()
        try:
            async with asyncio.timeout(FIRST_LIST_SECONDS):
                for event in self._listed.values():
                    await event.wait()
        except TimeoutError:
            missing = [resource for resource, event in self._listed.items() if not event.is_set()]
            raise TimeoutError(
                f"the cluster-wide watches of {', '.join(missing)} have not listed yet"
            ) from None
        self._observers[namespace] = observer
        for resource in self.resources:
            observer.listed(resource, [])

    def unsubscribe(self, namespace: str) -> None:
        self._observers.pop(namespace, None)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.client.close()

    def _start(self) -> None:
        if self._tasks:
            return
        for resource in self.resources:
            watch = self.client.list_and_watch(
                collection_path(resource), self._lister(resource), self._handler(resource)
            )
            self._tasks.append(asyncio.create_task(watch, name=f"sandbox-watch:{resource}"))

    def _lister(self, resource: str) -> ListHandler:
        def on_list(items: list[dict[str, Any]]) -> None:
            by_namespace: dict[str, list[dict[str, Any]]] = {}
            for item in items:
                namespace = str((item.get("metadata") or {}).get("namespace", ""))
                if namespace in self._observers:
                    by_namespace.setdefault(namespace, []).append(item)
            for namespace, observer in list(self._observers.items()):
                self._deliver(observer.listed, resource, by_namespace.get(namespace, []))
            self._listed[resource].set()

        return on_list

    def _handler(self, resource: str) -> EventHandler:
        def on_event(kind: str, obj: dict[str, Any]) -> None:
            observer = self._observers.get(str((obj.get("metadata") or {}).get("namespace", "")))
            if observer is not None:
                self._deliver(observer.changed, resource, kind, obj)

        return on_event

    @staticmethod
    def _deliver(method: Callable[..., None], *arguments: Any) -> None:
        try:
            method(*arguments)
        except Exception:  # one trial's observer must not stop the watch every trial shares
            logger.exception("a sandbox observer failed on %s", arguments[0])
