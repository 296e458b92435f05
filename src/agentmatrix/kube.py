"""A small asynchronous Kubernetes API client: GET, and list-then-watch with resumption.

Connection settings (server, CA, client certificate or token) are read with the official
`kubernetes` package's config loaders; requests go through aiohttp on the webhook's own loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

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


@dataclass(frozen=True)
class KubeAccess:
    server: str
    ssl_context: ssl.SSLContext
    header_source: Callable[[], Mapping[str, str]]

    @property
    def headers(self) -> Mapping[str, str]:
        """The identity's headers now: in a pod, the ServiceAccount token file is read again when
        the kubelet has rotated it (the `kubernetes` package's refresh hook)."""
        return self.header_source()

    @classmethod
    def load(cls, kubeconfig: Path | None = None) -> KubeAccess:
        """From `kubeconfig`, else in-cluster settings when running in a pod, else the default kubeconfig."""
        cfg = k8s_client.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=cfg)
        else:
            k8s_config.load_kube_config(
                config_file=str(kubeconfig) if kubeconfig else None, client_configuration=cfg
            )
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert else None
        if context is None:
            context = ssl.create_default_context()
        if not cfg.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)

        def headers() -> Mapping[str, str]:
            # Newer kubernetes clients keep the token under "BearerToken", older ones under "authorization".
            token = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
            return {"Authorization": token} if token else {}

        return cls(cfg.host.rstrip("/"), context, headers)


def collection_path(resource: str, namespace: str | None = None) -> str:
    base = API_PATHS[resource]
    if namespace:
        return f"{base}/namespaces/{namespace}/{resource}"
    return f"{base}/{resource}"


EventHandler = Callable[[str, dict[str, Any]], None]
ListHandler = Callable[[list[dict[str, Any]]], None]


class KubeClient:
    def __init__(self, access: KubeAccess) -> None:
        self.access = access
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                base_url=self.access.server,
                connector=aiohttp.TCPConnector(ssl=self.access.ssl_context),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str, *, deadline: float = 2.0) -> dict[str, Any] | None:
        """The object at `path`, or None if it does not exist; gives up after `deadline` seconds."""
        timeout = aiohttp.ClientTimeout(total=deadline)
        async with self._http().get(path, headers=self.access.headers, timeout=timeout) as reply:
            if reply.status == 404:
                return None
            reply.raise_for_status()
            data: dict[str, Any] = await reply.json()
            return data

    async def list_and_watch(
        self,
        path: str,
        on_list: ListHandler,
        on_event: EventHandler,
        *,
        label_selector: str = "",
        synced: Callable[[], None] | None = None,
        retry_delay: float = 1.0,
    ) -> None:
        """List `path`, then follow it for ever; relist whenever the watch cannot resume."""
        params = {"labelSelector": label_selector} if label_selector else {}
        while True:
            try:
                listing = await self.get_list(path, params)
                on_list(listing["items"] or [])
                if synced is not None:
                    synced()
                    synced = None
                version = listing["metadata"]["resourceVersion"]
                while version:
                    version = await self._watch(path, params, version, on_event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watch of %s failed (%s); listing again", path, exc)
                await asyncio.sleep(retry_delay)

    async def get_list(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        async with self._http().get(path, params=dict(params), headers=self.access.headers) as reply:
            reply.raise_for_status()
            data: dict[str, Any] = await reply.json()
            return data

    async def _watch(self, path: str, params: Mapping[str, str], version: str, on_event: EventHandler) -> str:
        """Follow one watch; returns the version to resume from, or "" to relist."""
        query = {
            **params,
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_read=330)
        async with self._http().get(
            path, params=query, headers=self.access.headers, timeout=timeout
        ) as reply:
            if reply.status == 410:
                return ""
            reply.raise_for_status()
            async for line in reply.content:
                if not line.strip():
                    continue
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    return ""  # typically 410 Gone: the version is too old
                version = obj.get("metadata", {}).get("resourceVersion", version)
                if kind != "BOOKMARK":
                    on_event(kind, obj)
        return version
