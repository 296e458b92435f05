"""A per-trial key for an external agent that reaches only the model.

An external agent is given `OPENAI_BASE_URL` (this proxy, on 127.0.0.1) and `OPENAI_API_KEY` (a
random key made for the trial). The proxy accepts requests carrying that key and no other,
forwards them to the model endpoint with the real key (if any) in their place, and streams the
answers back (server-sent events included). So the agent holds nothing that works anywhere
else, and the real key never enters its sandbox. Token usage in the answers is added up.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

# Headers that describe one hop, or that the proxy sets itself.
_NOT_FORWARDED = frozenset(
    {
        "host", "authorization", "connection", "keep-alive", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "content-length", "accept-encoding",
    }
)  # fmt: skip
_CHUNK = 16_384


@dataclass
class ProxyUsage:
    requests: int = 0
    refused: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ModelProxy:
    upstream: str  # the model endpoint's base URL, e.g. http://127.0.0.1:8080/v1
    upstream_key: str | None = None
    host: str = "127.0.0.1"
    trial_key: str = field(default_factory=lambda: f"am-trial-{secrets.token_urlsafe(24)}")
    usage: ProxyUsage = field(default_factory=ProxyUsage)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=600))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        for address in self._runner.addresses:
            self.port = int(address[1])
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _target(self, path: str, query: str) -> str:
        """`/v1/chat/completions` on the proxy -> `<upstream>/chat/completions`."""
        tail = path[len("/v1") :] if path == "/v1" or path.startswith("/v1/") else path
        url = self.upstream.rstrip("/") + tail
        return f"{url}?{query}" if query else url

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if not secrets.compare_digest(request.headers.get("Authorization", ""), f"Bearer {self.trial_key}"):
            self.usage.refused += 1
            return web.json_response(
                {
                    "error": {
                        "message": "invalid API key",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
                status=401,
            )
        self.usage.requests += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        if self.upstream_key:
            headers["Authorization"] = f"Bearer {self.upstream_key}"
        body = await request.read()
        assert self._session is not None
        try:
            upstream = await self._session.request(
                request.method, self._target(request.path, request.query_string), headers=headers, data=body
            )
        except aiohttp.ClientError as error:
            return web.json_response(
                {"error": {"message": f"the model endpoint is unreachable: {error}", "type": "proxy_error"}},
                status=502,
            )
        async with upstream:
            response = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in _NOT_FORWARDED and name.lower() != "content-encoding":
                    response.headers[name] = value
            await response.prepare(request)
            kept = bytearray()
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                if len(kept) < 4 * 1024 * 1024:
                    kept.extend(chunk)
                await response.write(chunk)
            await response.write_eof()
        self._count(bytes(kept))
        return response

    def _count(self, body: bytes) -> None:
        """Add the `usage` of a JSON answer, or of the last event of a stream that has one."""
        texts = [body]
        if body.startswith(b"data:") or b"\ndata:" in body:
            texts = [line[5:].strip() for line in body.splitlines() if line.startswith(b"data:")]
        for text in reversed(texts):
            try:
                usage = json.loads(text).get("usage")
            except (ValueError, AttributeError):
                continue
            if isinstance(usage, dict):
                self.usage.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                self.usage.completion_tokens += int(usage.get("completion_tokens") or 0)
                return
