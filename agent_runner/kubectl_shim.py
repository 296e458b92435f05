#!/usr/bin/python3 -IS
"""The recording kubectl: runs the real kubectl and appends what it was asked and how it ended.

This file is installed, as it is, in front of the real kubectl inside the agent's sandbox (see
`kubectl_record`); it runs under the system's Python with the standard library only, isolated
from any environment. Layout, relative to the directory above its own:
`real/kubectl` (the real binary) and `record/kubectl.jsonl` (the record, append-only).

Each invocation appends two lines: `{"phase": "start", "id", "argv", "start"}` before the real
kubectl runs, and `{"phase": "end", "id", "exit", "stdoutBytes", "stderrBytes", "seconds"}` after
it, so that a call killed with its command still leaves its start. Output is passed through
unchanged and only counted. The record is evidence, not the measurement: the agent can write to
it and can run the real binary directly; what it did is measured at the API server.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL = os.path.join(ROOT, "real", "kubectl")
RECORD = os.path.join(ROOT, "record", "kubectl.jsonl")
CHUNK = 65536
# Only modules that load fast: the shim runs before every kubectl (no subprocess, no threads).


def append(record: dict[str, object]) -> None:
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    try:
        fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        return
    try:
        os.write(fd, line)  # one write of an O_APPEND file: lines of concurrent calls never mix
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> bool:
    """False once the reader has gone (the output is still counted)."""
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        return False
    return True


def relay(pipes: dict[int, int]) -> dict[int, int]:
    """Copy each pipe to its target descriptor until both close; the bytes each carried."""
    counts = dict.fromkeys(pipes.values(), 0)
    open_targets = set(pipes.values())
    poller = select.poll()
    for source in pipes:
        poller.register(source, select.POLLIN | select.POLLHUP)
    while pipes:
        for source, _event in poller.poll():
            data = os.read(source, CHUNK)
            target = pipes[source]
            if not data:
                poller.unregister(source)
                os.close(source)
                del pipes[source]
                continue
            counts[target] += len(data)
            if target in open_targets and not write_all(target, data):
                open_targets.discard(target)
    return counts


def main() -> int:
    call = f"{os.getpid()}-{time.time_ns()}"
    started = time.time()
    clock = time.monotonic()
    append({"phase": "start", "id": call, "argv": sys.argv[1:], "start": round(started, 3)})
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    actions = [
        (os.POSIX_SPAWN_DUP2, out_write, 1),
        (os.POSIX_SPAWN_DUP2, err_write, 2),
        (os.POSIX_SPAWN_CLOSE, out_read),
        (os.POSIX_SPAWN_CLOSE, err_read),
    ]
    try:
        pid = os.posix_spawn(REAL, [REAL, *sys.argv[1:]], os.environ, file_actions=actions)
    except OSError as error:
        sys.stderr.write(f"kubectl: {error}\n")
        append({"phase": "end", "id": call, "exit": 127, "stdoutBytes": 0, "stderrBytes": 0,
                "seconds": round(time.monotonic() - clock, 3)})  # fmt: skip
        return 127
    os.close(out_write)
    os.close(err_write)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda number, _frame: os.kill(pid, number))
    counts = relay({out_read: 1, err_read: 2})
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    append({"phase": "end", "id": call, "exit": code, "stdoutBytes": counts[1], "stderrBytes": counts[2],
            "seconds": round(time.monotonic() - clock, 3)})  # fmt: skip
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
