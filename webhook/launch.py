"""Start `agentmatrix webhook serve` as a child process and wait for the line it prints when ready."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_COMMAND = (sys.executable, "-m", "agentmatrix")


class LaunchError(RuntimeError):
    """The webhook did not start; the message carries the end of its log."""


@dataclass(frozen=True)
class Ready:
    url: str
    ca: Path | None
    ledger: Path
    probes: str | None = None  # plain-HTTP /healthz, /readyz, /metrics (--probe-port)


def start(
    args: list[str],
    log: Path,
    *,
    command: tuple[str, ...] = DEFAULT_COMMAND,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], Ready]:
    """`serve` with `args`; its stderr goes to `log`. Returns once it printed its ready line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as errors:
        process = subprocess.Popen(
            [*command, "webhook", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
            start_new_session=True,
        )
    started: dict[str, Any] = {}

    def read_ready_line() -> None:
        assert process.stdout is not None
        line = process.stdout.readline()
        if line:
            started.update(json.loads(line))

    reader = threading.Thread(target=read_ready_line, daemon=True)
    reader.start()
    reader.join(timeout)
    if not started:
        process.kill()
        process.wait()
        raise LaunchError(f"the webhook did not start within {timeout:.0f}s: {log.read_text()[-3000:]}")
    ca = Path(started["ca"]) if started.get("ca") else None
    ready = Ready(url=started["url"], ca=ca, ledger=Path(started["ledger"]), probes=started.get("probes"))
    return process, ready


def stop(process: subprocess.Popen[str], grace: float = 30.0) -> None:
    """SIGTERM (the webhook removes its registration), then SIGKILL after `grace` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
