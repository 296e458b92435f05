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
import signal
import subprocess
import sys
import threading
import time
from typing import BinaryIO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL = os.path.join(ROOT, "real", "kubectl")
RECORD = os.path.join(ROOT, "record", "kubectl.jsonl")
CHUNK = 65536


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


def pump(source: int, target: BinaryIO, counts: list[int], index: int) -> None:
    total = 0
    broken = False
    while True:
        chunk = os.read(source, CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if not broken:
            try:
                target.write(chunk)
                target.flush()
            except (BrokenPipeError, OSError):
                broken = True
    counts[index] = total


def main() -> int:
    call = f"{os.getpid()}-{time.time_ns()}"
    started = time.time()
    clock = time.monotonic()
    append({"phase": "start", "id": call, "argv": sys.argv[1:], "start": round(started, 3)})
    try:
        proc = subprocess.Popen([REAL, *sys.argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as error:
        sys.stderr.write(f"kubectl: {error}\n")
        append(
            {
                "phase": "end",
                "id": call,
                "exit": 127,
                "stdoutBytes": 0,
                "stderrBytes": 0,
                "seconds": round(time.monotonic() - clock, 3),
            }
        )
        return 127
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda number, _frame: proc.send_signal(number))
    assert proc.stdout is not None and proc.stderr is not None
    counts = [0, 0]
    pumps = [
        threading.Thread(target=pump, args=(proc.stdout.fileno(), sys.stdout.buffer, counts, 0)),
        threading.Thread(target=pump, args=(proc.stderr.fileno(), sys.stderr.buffer, counts, 1)),
    ]
    for thread in pumps:
        thread.start()
    for thread in pumps:
        thread.join()
    code = proc.wait()
    append(
        {
            "phase": "end",
            "id": call,
            "exit": code,
            "stdoutBytes": counts[0],
            "stderrBytes": counts[1],
            "seconds": round(time.monotonic() - clock, 3),
        }
    )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
