"""The `process` driver (the default): `agentmatrix agent run ...` on the operator's host, forked
by a warm `runner_host`, with a kubeconfig for the trial's `agent` ServiceAccount (a bound token
minted for the trial), so the API server applies RBAC and admission to every command exactly as
for a Pod. The only driver that works where pods do not really run (kwok).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentmatrix.api.replicationeval import AgentSpec
from agentmatrix.cluster import processes
from agentmatrix.operator import runner_host
from agentmatrix.operator.drivers.base import (
    API_KEY_ENV,
    Launch,
    read_result,
    read_transcript,
    runner_arguments,
    write_inputs,
)

if TYPE_CHECKING:
    from agentmatrix.operator.services import Services

DISCOVERY_CACHE_TTL = 3600.0


class RunnerHost:
    """The operator's side of `runner_host`: one warm process, started with the first trial, that
    forks each trial's agent runner. If the host dies, the next trial starts a new one; runners it
    had started are then followed by their pid."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._next_id = 0
        self._spawns: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._exits: dict[int, asyncio.Future[int | None]] = {}

    async def _ensure(self) -> asyncio.subprocess.Process:
        if self.proc is not None and self.proc.returncode is None:
            return self.proc
        env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
        self.proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "agentmatrix.operator.runner_host",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            start_new_session=True,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read(self.proc))
        return self.proc

    async def warm(self) -> None:
        async with self._lock:
            await self._ensure()

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            async for line in proc.stdout:
                with contextlib.suppress(ValueError):
                    self._dispatch(json.loads(line))
        finally:
            await proc.wait()
            for future in self._spawns.values():
                if not future.done():
                    future.set_exception(RuntimeError(f"the runner host exited ({proc.returncode})"))
            self._spawns.clear()
            for exit_future in self._exits.values():
                if not exit_future.done():
                    exit_future.set_result(None)  # unknown: followed by pid from here on
            self._exits.clear()

    def _dispatch(self, message: Mapping[str, Any]) -> None:
        if "exit" in message:
            exit_future = self._exits.pop(int(message["pid"]), None)
            if exit_future is not None and not exit_future.done():
                exit_future.set_result(int(message["exit"]))
            return
        future = self._spawns.pop(message.get("id", -1), None)
        if future is not None and not future.done():
            future.set_result(dict(message))

    async def spawn(
        self, namespace: str, arguments: list[str], log: Path, env: Mapping[str, str]
    ) -> tuple[int, int, asyncio.Future[int | None]]:
        """Start a runner; its pid, kernel start time and a future of its exit code."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            proc = await self._ensure()
            self._next_id += 1
            request_id = self._next_id
            answer: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._spawns[request_id] = answer
            request = {"id": request_id, "namespace": namespace, "arguments": arguments,
                       "log": str(log), "env": dict(env)}  # fmt: skip
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(request) + "\n").encode())
            await proc.stdin.drain()
        reply = await answer
        if "error" in reply:
            raise RuntimeError(f"the runner host refused the run: {reply['error']}")
        pid = int(reply["pid"])
        exited: asyncio.Future[int | None] = loop.create_future()
        self._exits[pid] = exited
        return pid, int(reply.get("startTicks", 0)), exited

    async def close(self) -> None:
        """End the host (runners it started go on; stop them first)."""
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await self.proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await self._reader


@dataclass
class DiscoveryCache:
    """kubectl's discovery cache of the API server, made once by the first agent's credentials and
    shown read-only to every agent's kubectl: without it each trial's first command fetches and
    writes the whole discovery document again. Made anew when older than DISCOVERY_CACHE_TTL; if
    it cannot be made, agents go without it."""

    made_at: float | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def directory(self, kubectl: str, kubeconfig: Path, root: Path) -> Path | None:
        async with self._lock:
            if self.made_at is None or time.monotonic() - self.made_at > DISCOVERY_CACHE_TTL:
                proc = await asyncio.create_subprocess_exec(
                    kubectl, f"--kubeconfig={kubeconfig}", f"--cache-dir={root}", "api-resources",
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root)},
                )  # fmt: skip
                try:
                    async with asyncio.timeout(60):
                        code = await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
                    code = -1
                if code == 0:  # the agents' commands run as users of their own: readable by all
                    await asyncio.to_thread(make_world_readable, root / "discovery")
                self.made_at = time.monotonic() if code == 0 else None
            return root / "discovery" if self.made_at is not None else None


def make_world_readable(directory: Path) -> None:
    """kubectl writes its cache for its own user only; it holds no secret (the API's resources)."""
    for path in (directory, *directory.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)


@dataclass
class ProcessDriver:
    """Runs each trial's agent as a process on the operator's host, forked by a shared warm
    `RunnerHost` (started as the first trial begins, so its import overlaps the sandbox's set-up)."""

    kubectl: str | None = None
    host: RunnerHost = field(default_factory=RunnerHost)
    discovery: DiscoveryCache | None = None
    pods_in_sandbox: int = 0
    needs_agent_kubeconfig: bool = True

    @classmethod
    def for_operator(cls, services: Services) -> ProcessDriver:
        return cls(
            kubectl=services.settings.kubectl, host=services.runner_host, discovery=services.discovery_cache
        )

    async def prepare(self, namespace: str, workdir: Path, api_key: str | None) -> PreparedProcess:
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        await self.host.warm()
        return PreparedProcess(self, api_key)


@dataclass
class PreparedProcess:
    driver: ProcessDriver
    api_key: str | None

    async def sandbox_made(self, time_limit: float, agent: AgentSpec | None) -> None:
        return None

    async def start(self, launch: Launch) -> RunningProcess:
        await asyncio.to_thread(write_inputs, launch)
        arguments = runner_arguments(launch, kubectl=self.driver.kubectl)
        if self.driver.discovery is not None and launch.kubeconfig is not None:
            cache = await self.driver.discovery.directory(
                self.driver.kubectl or "kubectl", launch.kubeconfig, launch.workdir.parent / "kubectl-cache"
            )
            if cache is not None:
                arguments += ["--discovery-cache", str(cache)]
        return await spawn_runner(self.driver.host, launch, arguments, self.api_key)

    async def discard(self) -> None:
        return None


async def spawn_runner(
    host: RunnerHost, launch: Launch, arguments: list[str], api_key: str | None
) -> RunningProcess:
    """Fork a runner with `arguments` from the warm host; the model's key in its environment only."""
    env = {API_KEY_ENV: api_key} if api_key is not None else {}
    pid, ticks, exited = await host.spawn(launch.namespace, arguments, launch.workdir / "driver.log", env)
    return RunningProcess(launch, processes.RecordedProcess("driver", pid, ticks, ()), exited)


async def gone(process: processes.RecordedProcess) -> None:
    """Wait until a process that is not our child has ended (a pidfd turns readable)."""
    try:
        fd = os.pidfd_open(process.pid)
    except ProcessLookupError:
        return
    try:
        if not processes.is_alive(process):  # the pid was reused before we opened it
            return
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ended.done():
                ended.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await ended
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


class RunningProcess:
    def __init__(
        self, launch: Launch, process: processes.RecordedProcess, exited: asyncio.Future[int | None]
    ) -> None:
        self.launch = launch
        self.process = process
        self.exited = exited

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "process",
            "host": socket.gethostname(),
            "pid": self.process.pid,
            "startTicks": self.process.start_ticks,
        }

    async def wait(self) -> int | None:
        code = await asyncio.shield(self.exited)
        if code is None:  # the host went away: follow the runner by its pid
            await gone(self.process)
        return code

    async def stop(self) -> None:
        if self.exited.done() and self.exited.result() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if processes.is_alive(self.process):
                    os.killpg(self.process.pid, sig)
            try:
                async with asyncio.timeout(5):
                    await self.wait()
                return
            except TimeoutError:
                continue

    async def collect(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        return await asyncio.to_thread(
            lambda: (read_transcript(self.launch.transcript_path), read_result(self.launch.result_path))
        )


def stop_orphan(record: Mapping[str, Any], namespace: str) -> bool:
    """Stop a driver process a previous operator process started (found from the namespace's
    annotation), if it still runs: same host, same pid and kernel start time, and its command
    line names the trial's namespace. Returns whether one was stopped."""
    if record.get("kind") != "process" or record.get("host") != socket.gethostname():
        return False
    pid = int(record.get("pid", 0))
    recorded = processes.RecordedProcess("driver", pid, int(record.get("startTicks", -1)), ())
    if pid <= 0 or not processes.is_alive(recorded):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if runner_host.PROCESS_TITLE.encode() not in cmdline[0] or namespace.encode() not in cmdline[0]:
        return False
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not processes.is_alive(recorded):
                return True
            time.sleep(0.05)
    return not processes.is_alive(recorded)
