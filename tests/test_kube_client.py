"""The webhook's API client asks its identity for headers on every request, so that a
ServiceAccount token the kubelet rotates in a pod (bound tokens expire) reaches running watches.

A local aiohttp server stands in for the API server: it records the Authorization header of each
list and watch request, as the API server authenticates each one.
"""

from __future__ import annotations

import asyncio
import json
import ssl

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
