"""Start the real webhook (`agentmatrix webhook serve`) as a subprocess, and talk to it."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from agentmatrix.webhook import launch

AGENTMATRIX = str(Path(sys.executable).parent / "agentmatrix")


@dataclass
class RunningWebhook:
    url: str
    ca: Path
    ledger: Path
    process: subprocess.Popen[str]
    log: Path

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def session(self, connections: int = 16) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=self.ssl_context(), limit=connections)
        return aiohttp.ClientSession(base_url=self.url, connector=connector)

    def kill(self) -> None:
        """kill -9: no chance to flush or clean up."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextmanager
def running_webhook(
    directory: Path, *args: str, ledger: Path | None = None, timeout: float = 60.0
) -> Iterator[RunningWebhook]:
    """`args` are extra `serve` options (for example `--no-watch --sandbox t1`, or `--kubeconfig K`)."""
    directory.mkdir(parents=True, exist_ok=True)
    ledger = ledger or directory / "ledger.sqlite3"
    log = directory / f"webhook-{len(list(directory.glob('webhook-*.log')))}.log"
    options = ["--port", "0", "--cert-dir", str(directory / "certs"), "--ledger", str(ledger), *args]
    try:
        process, ready = launch.start(options, log, command=(AGENTMATRIX,), timeout=timeout)
    except launch.LaunchError as exc:
        raise RuntimeError(str(exc)) from exc
    assert ready.ca is not None
    try:
        yield RunningWebhook(ready.url, ready.ca, ledger, process, log)
    finally:
        launch.stop(process)


async def post_review(session: aiohttp.ClientSession, body: bytes) -> tuple[int, dict[str, Any]]:
    async with session.post("/validate", data=body, headers={"Content-Type": "application/json"}) as reply:
        return reply.status, await reply.json(content_type=None)
