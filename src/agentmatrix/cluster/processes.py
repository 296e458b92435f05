"""Start, record and stop the processes of a local cluster, by pid and only those."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class RecordedProcess:
    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells a recorded pid from a reused one
    ports: tuple[int, ...]


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after the closing paren are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def is_alive(proc: RecordedProcess) -> bool:
    ticks = _start_ticks(proc.pid)
    if ticks is None or ticks != proc.start_ticks:
        return False
    try:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _clean_env() -> dict[str, str]:
    """The environment for control-plane processes: no proxies (everything is on loopback), and
    unless set, Go's garbage collector trading memory for CPU (see docs/architecture.md)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.setdefault("GOGC", "400")
    env.setdefault("GOMEMLIMIT", "1GiB")
    return env


def spawn(name: str, argv: list[str], log_dir: Path, ports: tuple[int, ...] = ()) -> RecordedProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_clean_env(),
            start_new_session=True,
        )
    ticks = _start_ticks(proc.pid)
    if ticks is None:
        raise RuntimeError(f"{name} exited at once; see {log_dir / (name + '.log')}")
    return RecordedProcess(name=name, pid=proc.pid, start_ticks=ticks, ports=ports)


def stop(proc: RecordedProcess, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; only if the pid is still the recorded process."""
    if not is_alive(proc):
        _reap(proc.pid)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(proc.pid)
        if not is_alive(proc):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    for _ in range(100):
        _reap(proc.pid)
        if not is_alive(proc):
            return
        time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def save(path: Path, procs: list[RecordedProcess]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(p) for p in procs], indent=2))
    tmp.replace(path)


def load(path: Path) -> list[RecordedProcess]:
    if not path.exists():
        return []
    raw = json.loads(path.read_text())
    return [
        RecordedProcess(name=p["name"], pid=p["pid"], start_ticks=p["start_ticks"], ports=tuple(p["ports"]))
        for p in raw
    ]
