"""A small asynchronous Kubernetes API client on aiohttp: JSON in, JSON out, plus watches.

The operator's trials make many small calls concurrently (sandbox setup, pressure ticks, pod
watches); a thin async client keeps them on the event loop instead of a thread pool. Credentials
come from the official client's kubeconfig/in-cluster loader, so every auth method it knows works.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

JSON_MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
REQUEST_TIMEOUT = 30.0
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: Mapping[str, Any] | str) -> None:
        self.status = status
        self.reason = body.get("reason", "") if isinstance(body, Mapping) else ""
        message = body.get("message", "") if isinstance(body, Mapping) else str(body)[:500]
        self.message = str(message)
        super().__init__(f"{method} {path}: HTTP {status} {self.reason}: {self.message}")


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to trust it; identity is supplied separately."""

    server: str
    ssl_context: ssl.SSLContext | bool
    ca_data: bytes | None


def client_configuration(kubeconfig: Path | None = None) -> Any:
    """The official client's Configuration for `kubeconfig` (in a pod without one: in-cluster)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if kubeconfig is None and _in_cluster():
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None, client_configuration=configuration
        )
    return configuration


def authorization(configuration: Any) -> str | None:
    """The Authorization header value (newer clients keep the token under `BearerToken`)."""
    value = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    return str(value) if value else None


def load_connection(kubeconfig: Path | None = None) -> tuple[Connection, Callable[[], dict[str, str]]]:
    """The API server (with the client certificate, if any, in its SSL context) and a header
    factory for the configured identity."""
    configuration = client_configuration(kubeconfig)
    context: ssl.SSLContext | bool
    ca_data: bytes | None = None
    if configuration.verify_ssl:
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.ssl_ca_cert:
            ca_data = Path(configuration.ssl_ca_cert).read_bytes()
    else:
        context = False
    if configuration.cert_file and configuration.key_file:
        if not isinstance(context, ssl.SSLContext):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(configuration.cert_file, configuration.key_file)

    def headers() -> dict[str, str]:
        token = authorization(configuration)
        return {"Authorization": token} if token else {}

    return Connection(configuration.host.rstrip("/"), context, ca_data), headers


def _in_cluster() -> bool:
    import os

    return (
        bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
    )


class Kube:
    """One identity talking to one API server. Implements `agentmatrix.scenarios.base.KubeApi`."""

    def __init__(self, connection: Connection, headers: Callable[[], dict[str, str]]) -> None:
        self.connection = connection
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._server_only: ssl.SSLContext | bool | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path | None = None) -> Kube:
        connection, headers = load_connection(kubeconfig)
        return cls(connection, headers)

    def with_token(self, token: str) -> Kube:
        """The same API server, acting as whoever `token` belongs to (a ServiceAccount token)."""
        server_only = Connection(self.connection.server, self._server_ssl(), self.connection.ca_data)
        return Kube(server_only, lambda: {"Authorization": f"Bearer {token}"})

    def _server_ssl(self) -> ssl.SSLContext | bool:
        """TLS that trusts the API server and presents no client certificate (built once)."""
        if self._server_only is None:
            if self.connection.ssl_context is False:
                self._server_only = False
            elif self.connection.ca_data:
                self._server_only = ssl.create_default_context(cadata=self.connection.ca_data.decode())
            else:
                self._server_only = ssl.create_default_context()
        return self._server_only

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.connection.ssl_context, limit=64)
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
    ) -> dict[str, Any] | None:
        headers = {"Accept": "application/json", **self._headers()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body, default=dict)  # dict: Mappings that are not dicts
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with self.session.request(
            method, self.connection.server + path, data=data, params=params, headers=headers, timeout=timeout
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
            self.connection.server + path, headers=self._headers(), timeout=timeout
        ) as response:
            text = await response.text()
            if response.status == 404:
                return ""
            if response.status >= 400:
                raise ApiError(response.status, "GET", path, text)
            return text

    async def get(self, path: str) -> dict[str, Any] | None:
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

    async def delete(self, path: str, *, propagation: str = "Background") -> bool:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
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
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", path, params=params)
        assert result is not None
        return list(result.get("items") or [])

    # --- watches ------------------------------------------------------------------------------
    async def watch(
        self, path: str, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Events (type, object) from `resource_version` on; ends when the server closes the stream.

        Raises ApiError(410) when the version is too old (the caller lists again).
        """
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        headers = {"Accept": "application/json", **self._headers()}
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=REQUEST_TIMEOUT, sock_read=timeout_seconds + 30
        )
        async with self.session.get(
            self.connection.server + path, params=params, headers=headers, timeout=timeout
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


async def wait_until(check: Callable[[], Any], *, within: float, interval: float = 0.1) -> bool:
    """Poll an async predicate until it holds or `within` seconds pass; returns whether it held."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if await check():
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(interval)
