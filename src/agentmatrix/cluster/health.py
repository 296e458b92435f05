"""Asking the local API server as its admin, and waiting for a condition while the processes that
should bring it about still run."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from agentmatrix.cluster import processes
from agentmatrix.cluster.errors import ClusterError
from agentmatrix.cluster.state_layout import state_paths


def _admin_ssl_context(state_dir: Path) -> ssl.SSLContext:
    pki_dir = state_paths(state_dir)["pki"]
    context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
    return context


def api_get(state_dir: Path, server: str, path: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(  # noqa: S310 - our own loopback API server
            f"{server}{path}", context=_admin_ssl_context(state_dir), timeout=timeout
        ) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    procs: list[processes.RecordedProcess],
    log_dir: Path,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        dead = [p.name for p in procs if not processes.is_alive(p)]
        if dead:
            raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}; see {log_dir}")
        time.sleep(0.1)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; see {log_dir}")
