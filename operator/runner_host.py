"""`python -m agentmatrix.operator.runner_host`: one warm process that forks an agent runner per
trial.

The runner's start-up (importing the model client) costs about a second of CPU, which at ten
trials at once on a small machine was most of the harness's time. The host imports it once; each
agent run is a fork of the host, so it starts in milliseconds and still is a process of its own:
its own session and process group (stopped with `killpg`), its own log file, environment and
exit code. A forked runner shows `agentmatrix-agent NAMESPACE` as its command line, so a driver
left behind by a crashed operator can be recognised.

Protocol: JSON, one object a line. The operator writes
`{"id": N, "namespace": NS, "arguments": [...], "log": PATH, "env": {...}}` to stdin; the host
answers `{"id": N, "pid": P, "startTicks": T}` (or `{"id": N, "error": "..."}`), and when a
runner ends, `{"pid": P, "exit": CODE}` (CODE negative: killed by that signal). The host writes
`{"ready": true}` once it has imported the runner. At the end of stdin the host exits; the
runners it started go on until they end or are stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import setproctitle
import typer

from agentmatrix.cluster import processes

PROCESS_TITLE = "agentmatrix-agent"

Run = Callable[[Sequence[str]], object]


def run_child(request: Mapping[str, Any], run: Run) -> int:
    """In the forked child: become the trial's runner and run it; the exit code."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    log = os.open(str(request["log"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.environ.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
    setproctitle.setproctitle(f"{PROCESS_TITLE} {request['namespace']}")
    try:
        run([str(a) for a in request["arguments"]])
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    except BaseException as error:  # the runner's own failure, reported in its log
        traceback.print_exception(error)
        return 1
    return 0


def valid_request(request: object) -> str | None:
    """Why a request cannot be run (None if it can)."""
    if not isinstance(request, dict):
        return "a request is a JSON object"
    arguments = request.get("arguments")
    if not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
        return "arguments must be a list of strings"
    if not isinstance(request.get("log"), str) or not isinstance(request.get("namespace"), str):
        return "log and namespace must be strings"
    if not isinstance(request.get("env") or {}, dict):
        return "env must be an object"
    return None


class Host:
    def __init__(self, run: Run, out: TextIO | None = None) -> None:
        self.run = run
        self.out = out or sys.stdout
        self.children: set[int] = set()

    def send(self, message: Mapping[str, Any]) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def spawn(self, request: Mapping[str, Any]) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run_child(request, self.run)
            finally:
                flush_standard_streams()
                os._exit(code)
        self.children.add(pid)
        self.send({"id": request.get("id"), "pid": pid, "startTicks": processes._start_ticks(pid) or 0})

    def reap(self) -> None:
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                self.children.discard(pid)
                continue
            if done:
                self.children.discard(pid)
                self.send({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})

    def handle(self, line: bytes) -> None:
        try:
            request = json.loads(line)
        except ValueError:
            self.send({"id": None, "error": "not JSON"})
            return
        problem = valid_request(request)
        if problem is not None:
            self.send({"id": request.get("id") if isinstance(request, dict) else None, "error": problem})
            return
        self.spawn(request)

    def serve(self, stdin_fd: int = 0) -> None:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        selector = selectors.DefaultSelector()
        selector.register(stdin_fd, selectors.EVENT_READ, "stdin")
        selector.register(wake_read, selectors.EVENT_READ, "signal")
        self.send({"ready": True})
        pending = b""
        while True:
            for key, _ in selector.select(timeout=1.0):
                if key.data == "signal":
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_read, 512):
                            pass
                    continue
                chunk = os.read(stdin_fd, 65536)
                if not chunk:
                    self.reap()
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        self.handle(line)
            self.reap()


def flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def prebuild_converters(command: object) -> None:
    """Typer builds each option's value converter when it first parses one; build them in the
    host, so that the runners it forks inherit them."""
    for param in getattr(command, "params", []):
        build = getattr(param, "get_runtime_param", None)
        if callable(build):
            build()


def main() -> None:
    from agentmatrix.agent_runner.cli import agent_app, warm_up
    from agentmatrix.agent_runner.command_sandbox import SandboxUnavailable
    from agentmatrix.agent_runner.host_check import verify_host

    warm_up()  # before any fork, so that each runner inherits what it loads
    with contextlib.suppress(SandboxUnavailable):  # if it cannot, each runner says so in its result
        verify_host()  # once for this host, not once a runner
    command = typer.main.get_command(agent_app)  # built once, not in every runner
    prebuild_converters(getattr(command, "commands", {}).get("run", command))

    def run(arguments: Sequence[str]) -> object:
        return command.main(["run", *arguments], prog_name="agentmatrix agent")

    Host(run).serve()


if __name__ == "__main__":
    main()
