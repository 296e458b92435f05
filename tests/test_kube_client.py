"""The webhook's API client asks its identity for headers on every request, so that a
ServiceAccount token the kubelet rotates in a pod (bound tokens expire) reaches running watches.

A local aiohttp server stands in for the API server: it records the Authorization header of each
list and watch request, as the API server authenticates each one.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from agentmatrix.kube import Kube, KubeAccess


async def test_a_rotated_token_is_used_by_the_next_request() -> None:
    seen: list[str] = []

    async def pods(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        if request.query.get("watch"):
            reply = web.StreamResponse()
            await reply.prepare(request)
            await reply.write(json.dumps({"type": "ERROR", "object": {"code": 410}}).encode() + b"\n")
            return reply
        return web.json_response({"items": [], "metadata": {"resourceVersion": "7"}})

    app = web.Application()
    app.router.add_get("/api/v1/pods", pods)
    token = {"value": "first"}
    async with TestServer(app, host="127.0.0.1") as server:
        access = KubeAccess(
            str(server.make_url("")).rstrip("/"),
            ssl.create_default_context(),
            lambda: {"Authorization": f"Bearer {token['value']}"},
        )
        client = Kube(access)
        lists = 0
        enough = asyncio.Event()

        def on_list(_items: object) -> None:
            nonlocal lists
            lists += 1
            if lists == 2:
                token["value"] = "rotated"  # the kubelet wrote a new token file
            if lists == 4:
                enough.set()

        watching = asyncio.create_task(
            client.list_and_watch("/api/v1/pods", on_list, lambda *_: None, retry_delay=0.01)
        )
        try:
            async with asyncio.timeout(10):
                await enough.wait()
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            await client.close()
    assert seen[:3] == ["Bearer first", "Bearer first", "Bearer first"]  # list, watch, list
    assert "Bearer rotated" in seen[3:] and "Bearer first" not in seen[4:]


async def test_a_batched_watch_hands_over_every_event_in_order_and_resumes_from_the_last() -> None:
    """Events written one by one, some split across writes, all reach the handler in order when
    the watch is read in batches; the next watch starts from the last resourceVersion seen."""
    versions: list[str] = []
    resumed = asyncio.Event()

    def pod(number: int) -> bytes:
        meta = {"name": f"p{number}", "resourceVersion": str(number)}
        event = {"type": "ADDED", "object": {"metadata": meta}}
        return json.dumps(event).encode() + b"\n"

    async def pods(request: web.Request) -> web.StreamResponse:
        if not request.query.get("watch"):
            return web.json_response({"items": [], "metadata": {"resourceVersion": "0"}})
        versions.append(request.query["resourceVersion"])
        if len(versions) == 2:
            resumed.set()
        reply = web.StreamResponse()
        await reply.prepare(request)
        if len(versions) == 1:
            for number in range(1, 21):
                line = pod(number)
                await reply.write(line[:10])  # a line split across writes
                await reply.write(line[10:])
                if number % 5 == 0:
                    await asyncio.sleep(0.03)
        else:
            await asyncio.sleep(10)
        return reply

    app = web.Application()
    app.router.add_get("/api/v1/pods", pods)
    async with TestServer(app, host="127.0.0.1") as server:
        access = KubeAccess(str(server.make_url("")).rstrip("/"), False, dict)
        client = Kube(access)
        names: list[str] = []
        done = asyncio.Event()

        def on_event(kind: str, obj: dict[str, Any]) -> None:
            names.append(obj["metadata"]["name"])
            if len(names) == 20:
                done.set()

        watching = asyncio.create_task(
            client.list_and_watch("/api/v1/pods", lambda _: None, on_event, batch_seconds=0.05)
        )
        try:
            async with asyncio.timeout(10):
                await done.wait()
                await resumed.wait()
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            await client.close()
    assert names == [f"p{number}" for number in range(1, 21)]
    assert versions == ["0", "20"]
