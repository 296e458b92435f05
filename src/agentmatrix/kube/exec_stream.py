"""A command's stream through the API server (`pods/exec` over a websocket), once connected.

Each message carries one channel byte: stdin, stdout, stderr, or the API server's final status
(a `Status` object whose causes hold the command's exit code). v5 of the protocol adds closing
stdin; v4 is offered for older API servers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR = 0, 1, 2, 3


@dataclass(frozen=True)
class ExecEnd:
    """How an exec ended: what the command wrote to stderr, and the API server's final status."""

    stderr: bytes
    status: dict[str, Any] | None

    @property
    def exit_code(self) -> int | None:
        """0 on success, the command's code on failure (None if the stream ended without one)."""
        if self.status is None:
            return None
        if self.status.get("status") == "Success":
            return 0
        for cause in (self.status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                with contextlib.suppress(ValueError, TypeError):
                    return int(cause.get("message"))
        return None


async def relay(
    socket: aiohttp.ClientWebSocketResponse, on_stdout: Callable[[bytes], None], stop: asyncio.Event | None
) -> ExecEnd:
    """Hand the command's stdout to `on_stdout` until the stream ends; when `stop` is set, send one
    line to the command's stdin. Closes the socket (also when cancelled)."""
    stderr = bytearray()
    status: dict[str, Any] | None = None
    stopper = asyncio.ensure_future(stop.wait() if stop is not None else asyncio.Event().wait())
    receiving = asyncio.ensure_future(socket.receive())
    try:
        while True:
            done, _ = await asyncio.wait({receiving, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done and not stopper.cancelled():
                await socket.send_bytes(bytes([STDIN]) + b"stop\n")
                stopper = asyncio.ensure_future(asyncio.Event().wait())
            if receiving not in done:
                continue
            message = receiving.result()
            if message.type is not aiohttp.WSMsgType.BINARY:
                break  # closed (the command ended) or an error
            channel, data = message.data[0], message.data[1:]
            if channel == STDOUT and data:
                on_stdout(data)
            elif channel == STDERR:
                stderr.extend(data)
            elif channel == ERROR and data:
                with contextlib.suppress(ValueError):
                    status = orjson.loads(data)
            receiving = asyncio.ensure_future(socket.receive())
    finally:
        stopper.cancel()
        receiving.cancel()
        await socket.close()
    return ExecEnd(bytes(stderr), status)
