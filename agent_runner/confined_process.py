"""Run one confined command line and collect what it leaves: its output (up to a cap), exit code,
time, and the trial's limit it reached, if any. The command is killed with its whole process group
at its time limit, at the trial's process limit, or when asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from agentmatrix.agent_runner.command_sandbox import PROCESS_POLL_SECONDS, CommandOutcome
from agentmatrix.agent_runner.isolation import TrialSpace
from agentmatrix.agent_runner.limits import LimitMeter

_READ_CHUNK = 65_536


async def run_confined(
    argv: list[str],
    space: TrialSpace,
    meter: LimitMeter,
    time_limit: float,
    output_cap: int,
    stdin: Path | None = None,
    stop: asyncio.Event | None = None,
) -> CommandOutcome:
    """Run `argv` (a command line of `space`, see `sandbox.Sandbox.argv`), its limits read by `meter`."""
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    source = os.open(stdin, os.O_RDONLY | os.O_CLOEXEC) if stdin is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(  # noqa: ASYNC220 (a vfork and exec; the waiting is asynchronous)
            argv,
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # bubblewrap sets the command's own environment
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            pass_fds=space.fds,
        )
    finally:
        if stdin is not None:
            os.close(source)
    assert proc.stdout is not None
    reader = asyncio.StreamReader(limit=_READ_CHUNK)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), proc.stdout)
    # The exit status with the resource usage of the command's whole process tree.
    waiter = asyncio.ensure_future(asyncio.to_thread(os.wait4, proc.pid, 0))
    kept = bytearray()
    total = 0

    async def drain() -> None:
        nonlocal total
        while chunk := await reader.read(_READ_CHUNK):
            total += len(chunk)
            room = output_cap - len(kept)
            if room > 0:
                kept.extend(chunk[:room])
        await asyncio.shield(waiter)

    async def watch_processes() -> None:
        """Returns once the trial's user runs at its process limit."""
        while True:
            await asyncio.sleep(PROCESS_POLL_SECONDS)  # most commands end before the first look
            if await asyncio.to_thread(meter.processes_at_limit):
                return

    reading = asyncio.ensure_future(drain())
    watching = asyncio.ensure_future(watch_processes())
    stopping = asyncio.ensure_future(stop.wait() if stop is not None else asyncio.Event().wait())
    timed_out = False
    at_process_limit = False
    try:
        done, _ = await asyncio.wait(
            {reading, watching, stopping}, timeout=time_limit, return_when=asyncio.FIRST_COMPLETED
        )
        if reading not in done:
            at_process_limit = watching in done or meter.processes_at_limit()
            timed_out = not at_process_limit and stopping not in done
            _kill_group(proc.pid)
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        raise
    finally:
        watching.cancel()
        stopping.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(waiter), 10)
        reading.cancel()
        transport.close()
    _, status, usage = waiter.result()
    proc.returncode = os.waitstatus_to_exitcode(status)
    hit = meter.command_ended(usage, space.disk_free(), at_process_limit, bytes(kept))
    return CommandOutcome.collected(
        bytes(kept), total, exit_code=proc.returncode, timed_out=timed_out, started=started, limit=hit
    )


def _kill_group(pid: int) -> None:
    """bwrap leads its own process group; its sandboxed children die with it (--die-with-parent)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
