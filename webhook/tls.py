"""The webhook's TLS listener: only the API server gets past the handshake.

With a client CA, every connection must present a client certificate that CA signed (the API
server's, from its `AdmissionConfiguration`); anything else is refused during the TLS handshake,
before a byte of HTTP is read. The handshake runs through `loop.start_tls` on a plain TCP
connection, so each failure surfaces as an exception here (asyncio's own TLS server swallows
them): it is counted by reason and logged (peer address and reason, nothing else), and only a
completed handshake reaches aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, cast

from aiohttp import web

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
# Reasons a connection is refused (the label values of the refusal metric).
Refusal = Literal["no_certificate", "untrusted_certificate", "not_tls", "timeout", "aborted", "other"]
REFUSALS: tuple[Refusal, ...] = (
    "no_certificate",
    "untrusted_certificate",
    "not_tls",
    "timeout",
    "aborted",
    "other",
)


def server_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """A server context; with `client_ca`, a client certificate signed by it is required.

    The context starts empty (no system CAs): a certificate from a public CA must not pass."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(client_ca))
    return context


def refusal_reason(exc: BaseException) -> Refusal:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "untrusted_certificate"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "CERTIFICATE_REQUIRED" in reason or "DID_NOT_RETURN_A_CERTIFICATE" in reason:
            return "no_certificate"
        if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
            return "untrusted_certificate"
        if reason in ("HTTP_REQUEST", "WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL", "RECORD_LAYER_FAILURE"):
            return "not_tls"
        if "EOF" in reason:
            return "aborted"
        return "other"
    if isinstance(exc, (ConnectionError, EOFError)):
        return "aborted"
    return "other"


class _RefusalLog:
    """Logs refusals, at most `burst` lines per `window` seconds (a port scan must not flood the log)."""

    def __init__(self, burst: int = 20, window: float = 60.0) -> None:
        self.burst, self.window = burst, window
        self._start, self._logged, self._suppressed = 0.0, 0, 0

    def __call__(self, peer: str, reason: Refusal, detail: str) -> None:
        now = time.monotonic()
        if now - self._start > self.window:
            if self._suppressed:
                log.warning("%d more connections refused in the last %.0f s", self._suppressed, self.window)
            self._start, self._logged, self._suppressed = now, 0, 0
        if self._logged < self.burst:
            self._logged += 1
            log.warning("refused a connection from %s at the TLS handshake: %s (%s)", peer, reason, detail)
        else:
            self._suppressed += 1


class _Handshake(asyncio.Protocol):
    """Holds a fresh TCP connection while its TLS handshake runs, then hands it to aiohttp."""

    def __init__(self, site: GatedSite) -> None:
        self.site = site
        self.transport: asyncio.Transport | None = None
        self.handler: asyncio.Protocol | None = None
        self.tls_started = False
        self.raw: list[bytes] = []  # bytes read before start_tls took the connection over
        self.early: list[bytes] = []  # plaintext the TLS layer delivers before the hand-over
        self.eof = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.pause_reading()  # asyncio's loop honours it; uvloop reads on regardless
        self.site.begin(self)

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)
        elif self.tls_started:
            self.early.append(data)
        else:
            self.raw.append(data)

    def replay(self) -> None:
        """Give the TLS protocol that start_tls put in place what was read before it was there."""
        self.tls_started = True
        assert self.transport is not None
        # A buffered protocol in both loops (uvloop's is no asyncio.BufferedProtocol subclass).
        tls = cast(asyncio.BufferedProtocol, self.transport.get_protocol())
        data = b"".join(self.raw)
        self.raw.clear()
        while data and not self.transport.is_closing():
            buffer = memoryview(tls.get_buffer(len(data)))
            size = min(len(buffer), len(data))
            buffer[:size] = data[:size]
            tls.buffer_updated(size)
            data = data[size:]

    def eof_received(self) -> bool | None:
        if self.handler is not None:
            return self.handler.eof_received()
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handler is not None:
            self.handler.connection_lost(exc)
        else:
            self.lost = True


class GatedSite(web.BaseSite):
    """An aiohttp site whose TLS handshakes are run, and refusals counted, by the webhook itself."""

    __slots__ = ("_host", "_log", "_on_refusal", "_port", "_tasks")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        on_refusal: Callable[[Refusal], None],
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host, self._port = host, port
        self._on_refusal = on_refusal
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = _RefusalLog()

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Handshake(self), self._host, self._port, backlog=self._backlog, reuse_address=True
        )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().stop()

    def begin(self, connection: _Handshake) -> None:
        task = asyncio.get_running_loop().create_task(self._handshake(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handshake(self, connection: _Handshake) -> None:
        transport = connection.transport
        assert transport is not None and self._ssl_context is not None
        peer = transport.get_extra_info("peername")
        loop = asyncio.get_running_loop()
        handshake = asyncio.ensure_future(
            loop.start_tls(
                transport,
                connection,
                self._ssl_context,
                server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        )
        try:
            # start_tls first stops reading, puts its TLS protocol in place and schedules that
            # protocol's connection_made; the bytes read before (the ClientHello, on uvloop)
            # are replayed into it right after.
            await asyncio.sleep(0)
            loop.call_soon(connection.replay)
            tls = await handshake
        except asyncio.CancelledError:
            handshake.cancel()
            transport.abort()
            raise
        except Exception as exc:  # any failed handshake is a refusal (a closed transport included)
            reason = refusal_reason(exc)
            self._on_refusal(reason)
            self._log(_address(peer), reason, getattr(exc, "reason", None) or type(exc).__name__)
            transport.abort()
            return
        if tls is None or connection.lost:
            return
        server = self._runner.server
        assert server is not None
        handler = server()
        tls.set_protocol(handler)
        handler.connection_made(tls)
        connection.handler = handler
        for data in connection.early:
            handler.data_received(data)
        connection.early.clear()
        if connection.eof:
            handler.eof_received()


def _address(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
