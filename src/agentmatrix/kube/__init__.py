"""The project's one Kubernetes API client outside Kopf: asynchronous JSON requests and watches.

Hand-written on aiohttp and orjson because watches are the hot path: the webhook and the operator
follow every workload kind cluster-wide, and objects are used as plain dicts (docs/architecture.md
has the measured comparison with kubernetes_asyncio and lightkube). A `Kube` is made from a
`KubeAccess` (`access`: the connection settings, from the official `kubernetes` package's
loaders); `Kube.exec` runs a command in a Pod (`exec_stream`: the stream's protocol).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from agentmatrix.kube import exec_stream
from agentmatrix.kube.access import KubeAccess as KubeAccess  # a Kube's settings, named with it
from agentmatrix.kube.exec_stream import ExecEnd

log = logging.getLogger(__name__)

API_PATHS: Mapping[str, str] = {
    "namespaces": "/api/v1",
    "nodes": "/api/v1",
    "pods": "/api/v1",
    "replicationcontrollers": "/api/v1",
    "deployments": "/apis/apps/v1",
    "replicasets": "/apis/apps/v1",
    "statefulsets": "/apis/apps/v1",
    "daemonsets": "/apis/apps/v1",
    "jobs": "/apis/batch/v1",
    "cronjobs": "/apis/batch/v1",
    "horizontalpodautoscalers": "/apis/autoscaling/v2",
}
JSON_MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = 30.0
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
WATCH_SECONDS = 300  # the server ends each watch after this long; it is resumed from its last version

EventHandler = Callable[[str, dict[str, Any]], None]
ListHandler = Callable[[list[dict[str, Any]]], None]


def collection_path(resource: str, namespace: str | None = None) -> str:
    base = API_PATHS[resource]
    if namespace:
        return f"{base}/namespaces/{namespace}/{resource}"
    return f"{base}/{resource}"


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: Mapping[str, Any] | str) -> None:
        self.status = status
        self.reason = body.get("reason", "") if isinstance(body, Mapping) else ""
        message = body.get("message", "") if isinstance(body, Mapping) else str(body)[:500]
        self.message = str(message)
        super().__init__(f"{method} {path}: HTTP {status} {self.reason}: {self.message}")


class Kube:
    """One identity talking to one API server. Implements `agentmatrix.scenarios.base.KubeApi`."""

    def __init__(self, access: KubeAccess, *, connections: int = 64) -> None:
        """`connections`: at most this many open at once (0: no limit; each watch holds one)."""
        self.access = access
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._server_only: ssl.SSLContext | bool | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path | None = None) -> Kube:
        return cls(KubeAccess.load(kubeconfig))

    def with_token(self, token: str) -> Kube:
        """The same API server, acting as whoever `token` belongs to (a ServiceAccount token)."""
        if self._server_only is None:
            self._server_only = self.access.server_only_ssl()
        header = {"Authorization": f"Bearer {token}"}
        return Kube(KubeAccess(self.access.server, self._server_only, lambda: header, self.access.ca_data))

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.access.ssl_context, limit=self._connections)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- plain requests -----------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        ok_missing: bool = False,
    ) -> dict[str, Any] | None:
        """One API call; throttling, server errors and broken connections are retried a few times."""
        for delay in (*RETRY_DELAYS, None):
            try:
                return await self._request_once(method, path, body, params, content_type, ok_missing)
            except ApiError as error:
                if delay is None or error.status not in RETRY_STATUSES:
                    raise
            except (aiohttp.ClientConnectionError, TimeoutError):
                if delay is None:
                    raise
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _request_once(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
        content_type: str,
        ok_missing: bool,
        limit: float = REQUEST_TIMEOUT,
    ) -> dict[str, Any] | None:
        headers = {"Accept": "application/json", **self.access.headers}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body, default=dict)  # dict: Mappings that are not dicts
        async with self.session.request(
            method,
            self.access.server + path,
            data=data,
            params=params,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=limit),
        ) as response:
            raw = await response.read()
            if response.status == 404 and ok_missing:
                return None
            if response.status >= 400:
                try:
                    parsed: Mapping[str, Any] | str = orjson.loads(raw)
                except ValueError:
                    parsed = raw.decode(errors="replace")
                raise ApiError(response.status, method, path, parsed)
            return orjson.loads(raw) if raw else {}

    async def request_text(self, path: str) -> str:
        """A non-JSON GET (a pod's log); empty when the object does not exist."""
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with self.session.get(
            self.access.server + path, headers=self.access.headers, timeout=timeout
        ) as response:
            text = await response.text()
            if response.status == 404:
                return ""
            if response.status >= 400:
                raise ApiError(response.status, "GET", path, text)
            return text

    async def get(self, path: str, *, deadline: float | None = None) -> dict[str, Any] | None:
        """The object at `path`, or None if it does not exist. With a `deadline` (seconds): one
        attempt that gives up then (the webhook's lookups on its hot path); else retried."""
        if deadline is not None:
            return await self._request_once("GET", path, None, None, "", True, limit=deadline)
        return await self.request("GET", path, ok_missing=True)

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result = await self.request("POST", path, body=body)
        assert result is not None
        return result

    async def create_or_keep(self, path: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create; an object that already exists is left as it is (returns None)."""
        try:
            return await self.create(path, body)
        except ApiError as error:
            if error.status == 409:
                return None
            raise

    async def merge_patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self.request("PATCH", path, body=body, content_type=JSON_MERGE_PATCH, ok_missing=True)

    async def delete(
        self, path: str, *, propagation: str = "Background", grace_period_seconds: int | None = None
    ) -> bool:
        """Deletes an object, or every object of a collection's path; False if there was none."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        result = await self.request("DELETE", path, body=body, ok_missing=True)
        return result is not None

    async def list_with_version(
        self, path: str, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", path, params=params)
        assert result is not None
        return list(result.get("items") or []), str((result.get("metadata") or {}).get("resourceVersion", ""))

    async def list(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        return (await self.list_with_version(path, label_selector))[0]

    # --- exec ---------------------------------------------------------------------------------
    async def exec(
        self,
        namespace: str,
        pod: str,
        command: Sequence[str],
        *,
        container: str,
        on_stdout: Callable[[bytes], None],
        stop: asyncio.Event | None = None,
    ) -> ExecEnd:
        """Run `command` in a container through the API server (`pods/exec`, a websocket),
        handing its stdout to `on_stdout` as it comes. Its stdin stays open and empty until `stop`
        is set, when one line is sent to it; cancelling closes the stream (the command's stdin
        ends). Raises ApiError when the API server refuses."""
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}/exec"
        query = [("command", part) for part in command]
        query += [("container", container), ("stdin", "true"), ("stdout", "true"), ("stderr", "true")]
        try:
            socket = await self.session.ws_connect(
                self.access.server + path,
                params=query,
                headers=self.access.headers,
                protocols=exec_stream.PROTOCOLS,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                max_msg_size=0,
            )
        except aiohttp.WSServerHandshakeError as error:
            raise ApiError(error.status, "GET", path, error.message) from error
        return await exec_stream.relay(socket, on_stdout, stop)

    # --- watches ------------------------------------------------------------------------------
    async def watch(
        self, path: str, resource_version: str, *, timeout_seconds: int = WATCH_SECONDS
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Events (type, object) from `resource_version` on, bookmarks included; ends when the
        server closes the stream. Raises ApiError(410) when the version is too old (list again)."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        headers = {"Accept": "application/json", **self.access.headers}
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=REQUEST_TIMEOUT, sock_read=timeout_seconds + 30
        )
        async with self.session.get(
            self.access.server + path, params=params, headers=headers, timeout=timeout
        ) as response:
            if response.status >= 400:
                raise ApiError(response.status, "WATCH", path, await response.text())
            async for line in response.content:
                if not line.strip():
                    continue
                event = orjson.loads(line)
                kind = str(event.get("type", ""))
                obj = event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code", 500)), "WATCH", path, obj)
                yield kind, obj

    async def list_and_watch(
        self,
        path: str,
        on_list: ListHandler,
        on_event: EventHandler,
        *,
        label_selector: str = "",
        synced: Callable[[], None] | None = None,
        retry_delay: float = 1.0,
        batch_seconds: float = 0.0,
    ) -> None:
        """List `path`, then follow it for ever, resuming each watch from the last version seen
        (bookmarks included); list again whenever the version is too old or the watch fails.

        `batch_seconds`: after handling what has arrived, leave the stream unread this long, so
        that a burst of events reaches the reader in one delivery instead of one each (events
        then reach `on_event` up to that much later)."""
        while True:
            try:
                items, version = await self.list_with_version(path, label_selector or None)
                on_list(items)
                if synced is not None:
                    synced()
                    synced = None
                while version:
                    version = await self._follow(path, label_selector, version, on_event, batch_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watch of %s failed (%s); listing again", path, exc)
                await asyncio.sleep(retry_delay)

    async def _follow(
        self, path: str, label_selector: str, version: str, on_event: EventHandler, batch_seconds: float = 0.0
    ) -> str:
        """One watch from `version`; returns the version to resume from, or "" to list again."""
        query = {
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        if label_selector:
            query["labelSelector"] = label_selector
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=REQUEST_TIMEOUT, sock_read=WATCH_SECONDS + 30
        )
        async with self.session.get(
            self.access.server + path, params=query, headers=self.access.headers, timeout=timeout
        ) as reply:
            if reply.status == 410:
                return ""
            if reply.status >= 400:
                raise ApiError(reply.status, "WATCH", path, await reply.text())
            transport = reply.connection.transport if reply.connection is not None else None
            pending = bytearray()
            while chunk := await reply.content.readany():
                pending += chunk
                end = pending.rfind(b"\n")
                if end < 0:
                    continue
                lines = pending[:end].split(b"\n")
                del pending[: end + 1]
                for line in lines:
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        return ""  # typically 410 Gone: the version is too old
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if kind != "BOOKMARK":
                        on_event(kind, obj)
                        if batch_seconds:
                            await asyncio.sleep(0)  # what else is ready (a review) waits for one event only
                if batch_seconds and transport is not None:
                    await _leave_unread(transport, batch_seconds)
        return version


async def _leave_unread(transport: asyncio.Transport, seconds: float) -> None:
    """Deliver nothing from `transport` for `seconds`: what arrives meanwhile is handed to the
    reader in one go afterwards, instead of one delivery (and one wake-up of the reader) per event."""
    transport.pause_reading()
    try:
        await asyncio.sleep(seconds)
    finally:
        if not transport.is_closing():
            transport.resume_reading()
