"""The agent's commands in its shell Pod: the runner stays outside, each command goes in by exec.

The pod driver gives each trial a Pod (`names.SHELL_POD` in the sandbox namespace) that only idles:
its container is the agent's machine, as the Pod's own unprivileged user, with the `agent`
ServiceAccount's projected token where in-cluster kubectl looks for it. The runner (a process of
the operator, holding the model's key) runs every command there through the API server's
`pods/exec`, with a credential of its own that may do nothing else (`--kubeconfig`; its token
never enters the Pod). Each exec runs `pod_command` (its source sent along), which applies the
trial's limits and reports how the command ended; what a command sees:

- its home `/home/agent` (working directory and HOME), the only place that lasts from one command
  to the next (a memory-backed volume of the trial's disk size), and a `/tmp` emptied after each
  command; the image's files read-only;
- exactly PATH, HOME, GOGC and the API server's in-cluster address in its environment; kubectl
  is the recording shim in front of the image's kubectl, whose record comes back with the
  command's report into the runner's copy (`shim.record`), as in process mode;
- the trial's per-command rlimits (processes, memory a process, CPU), and the container's CPU,
  memory and process limits; the process, memory, CPU and disk hits are noticed as in process
  mode (plus an OOM kill in the container, a memory hit);
- when the command ends (or times out, or is stopped), every other process of the container is
  killed, as when a sandbox's pid namespace ends in process mode.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import resource
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from agentmatrix.agent_runner import kubectl_record
from agentmatrix.agent_runner.agent_kubeconfig import current_server
from agentmatrix.agent_runner.command_sandbox import PROCESS_POLL_SECONDS, CommandOutcome, SandboxUnavailable
from agentmatrix.agent_runner.limits import PROCESS_HIT_SHARE, LimitHit, LimitMeter, Limits
from agentmatrix.api import names
from agentmatrix.cluster import kubeconfig as kubeconfig_file
from agentmatrix.kube import ApiError, Kube, KubeAccess

SHELL_CONTAINER = names.SHELL_CONTAINER
POD_HOME = names.SHELL_HOME
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 (a path)
POD_COMMAND_SOURCE = Path(__file__).with_name("pod_command.py").read_text()
SHIM_SOURCE = kubectl_record.SHIM_SOURCE.read_text().split("\n", 1)[1]  # without its #! line
EXEC_GRACE_SECONDS = 15.0  # past a command's own limit, before the runner gives up on its exec
READY_POLL_SECONDS = 0.25
# A container waiting for one of these will not start by itself.
STUCK_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
     "CreateContainerError", "RunContainerError"}
)  # fmt: skip


def pod_command(params: Mapping[str, Any]) -> list[str]:
    """The exec command that runs `pod_command` in the Pod with `params`."""
    return ["python3", "-IS", "-c", POD_COMMAND_SOURCE, json.dumps(params, separators=(",", ":"))]


def command_params(
    argv: Sequence[str],
    meter: LimitMeter,
    time_limit: float,
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    record_kubectl: bool = True,
) -> dict[str, Any]:
    return {
        "argv": list(argv),
        "home": POD_HOME,
        "env": dict(env or {}),
        "rlimits": meter.rlimits(),
        "time_limit": time_limit,
        "process_share": PROCESS_HIT_SHARE,
        "poll": PROCESS_POLL_SECONDS,
        "stdin": stdin,
        "shim": SHIM_SOURCE if record_kubectl else None,
    }


def exec_access(kubeconfig: Path) -> KubeAccess:
    """The runner's exec credential: a kubeconfig with a server, its CA and a bearer token."""
    data = kubeconfig_file.load(kubeconfig) or {}
    server = current_server(data)
    ca = None
    for entry in data.get("clusters") or []:
        encoded = (entry.get("cluster") or {}).get("certificate-authority-data")
        if encoded:
            ca = base64.b64decode(encoded)
    tokens = [(u.get("user") or {}).get("token") for u in data.get("users") or []]
    token = next((t for t in tokens if t), None)
    if token is None:
        raise SandboxUnavailable(f"{kubeconfig} holds no token to exec into the shell Pod with")
    return KubeAccess.bearer(server, ca, str(token))


def stuck(pod: Mapping[str, Any]) -> str | None:
    """Why a Pod will never run the agent's commands (None while it may)."""
    status = pod.get("status") or {}
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return "the shell Pod is being deleted"
    if status.get("phase") in ("Failed", "Succeeded"):
        return f"the shell Pod has ended ({status.get('reason') or status.get('phase')})"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return f"the shell Pod cannot start: {waiting['reason']}: {waiting.get('message', '')}".strip()
        if (container.get("state") or {}).get("terminated"):
            return "the shell Pod's container has ended"
    return None


def running(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and all(
        c.get("ready") or (c.get("state") or {}).get("running") for c in status.get("containerStatuses") or []
    )


class PodSandbox:
    """The agent's shell Pod, reached by exec. `open_checked` before the first command (it waits
    for the Pod to run), `close` after the last."""

    home = POD_HOME

    def __init__(
        self,
        scratch_dir: Path,
        kubeconfig: Path,
        namespace: str,
        pod: str,
        limits: Limits | None = None,
        ready_timeout: float = 300.0,
        record_kubectl: bool = True,
    ) -> None:
        self.scratch = scratch_dir.resolve()
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.pod = pod
        self.limits = limits or Limits()
        self.meter = LimitMeter(self.limits, None)
        self.ready_timeout = ready_timeout
        self.record_kubectl = record_kubectl
        self.shim: kubectl_record.ShimLayout | None = None
        self.kube: Kube | None = None
        self._secrets: list[str] = []
        self._inside: dict[Path, str] = {}  # local copies of files written into the Pod

    async def open(self) -> None:
        self.kube = Kube(exec_access(self.kubeconfig))
        await asyncio.to_thread(self._local_record)
        await self._wait_running()

    def _local_record(self) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        if self.record_kubectl:
            self.shim = kubectl_record.ShimLayout(kubectl_record.root_beside(self.scratch))
            self.shim.record_dir.mkdir(parents=True, exist_ok=True)
            self.shim.record.touch(mode=0o600)

    async def _wait_running(self) -> None:
        assert self.kube is not None
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}"
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                pod = await self.kube.get(path)
            except (ApiError, aiohttp.ClientError) as error:
                raise SandboxUnavailable(f"cannot look at the shell Pod {self.pod}: {error}") from error
            if pod is None:
                raise SandboxUnavailable(f"the shell Pod {self.pod} does not exist")
            if running(pod):
                return
            problem = stuck(pod)
            if problem is not None:
                raise SandboxUnavailable(problem)
            if time.monotonic() > deadline:
                raise SandboxUnavailable(
                    f"the shell Pod {self.pod} was not running after {self.ready_timeout:.0f} s "
                    f"(phase {(pod.get('status') or {}).get('phase')})"
                )
            await asyncio.sleep(READY_POLL_SECONDS)

    async def check(self) -> None:
        """Run a command in the Pod; learn the agent's token there (to redact it)."""
        outcome = await self.run_program(["cat", TOKEN_PATH], time_limit=30, output_cap=16_384)
        if outcome.exit_code != 0:
            raise SandboxUnavailable(
                f"cannot run commands in the shell Pod {self.pod} (exit {outcome.exit_code}): "
                f"{outcome.output.strip()[:500]}"
            )
        if outcome.output.strip():
            self._secrets.append(outcome.output.strip())

    async def open_checked(self) -> None:
        try:
            await self.open()
            await self.check()
        except SandboxUnavailable:
            await self.close()
            raise

    async def close(self) -> None:
        if self.kube is not None:
            await self.kube.close()
            self.kube = None

    def secrets(self) -> list[str]:
        """Credentials the commands can read (the agent's token in the Pod): to be redacted."""
        return list(self._secrets)

    async def forward_local_port(self, port: int) -> None:
        raise SandboxUnavailable(
            "the runner's local ports cannot be reached from the shell Pod (an external agent's "
            "model proxy); run spec.agent.command with the process driver, or give spec.agent.image"
        )

    async def write_agent_file(self, name: str, text: str) -> tuple[str, Path]:
        """Write a file into the agent's home in the Pod (and a copy here): its path inside, and
        the copy's path (run_program's `stdin` takes either)."""
        assert self.kube is not None
        params = {"files": {name: text}, "home": POD_HOME}
        end = await self.kube.exec(
            self.namespace, self.pod, pod_command(params), container=SHELL_CONTAINER, on_stdout=lambda _: None
        )
        if end.exit_code != 0:
            raise SandboxUnavailable(f"cannot write {name} in the shell Pod: {end.stderr[-500:]!r}")
        here = self.scratch / name
        await asyncio.to_thread(here.write_text, text)
        inside = f"{POD_HOME}/{name}"
        self._inside[here] = inside
        return inside, here

    async def run(self, command: str, time_limit: float, output_cap: int) -> CommandOutcome:
        return await self._execute(["sh", "-c", command], time_limit, output_cap)

    async def run_program(
        self,
        program: Sequence[str],
        time_limit: float,
        output_cap: int,
        *,
        env: Mapping[str, str] | None = None,
        stdin: Path | None = None,
        stop: asyncio.Event | None = None,
    ) -> CommandOutcome:
        inside = self._inside.get(stdin, str(stdin)) if stdin is not None else None
        return await self._execute(list(program), time_limit, output_cap, env, inside, stop)

    async def _execute(
        self,
        argv: list[str],
        time_limit: float,
        output_cap: int,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        stop: asyncio.Event | None = None,
    ) -> CommandOutcome:
        if self.kube is None:
            raise RuntimeError("the sandbox is not open: await open() before running commands")
        params = command_params(
            argv, self.meter, time_limit, env=env, stdin=stdin, record_kubectl=self.shim is not None
        )
        kept = bytearray()
        total = 0

        def take(data: bytes) -> None:
            nonlocal total
            total += len(data)
            room = output_cap - len(kept)
            if room > 0:
                kept.extend(data[:room])

        started = time.monotonic()
        report: dict[str, Any] = {}
        problem = None
        try:
            async with asyncio.timeout(time_limit + EXEC_GRACE_SECONDS):
                end = await self.kube.exec(
                    self.namespace, self.pod, pod_command(params),
                    container=SHELL_CONTAINER, on_stdout=take, stop=stop,
                )  # fmt: skip
            report = parse_report(end.stderr)
            if not report:
                said = (end.status or {}).get("message") or end.stderr[-300:].decode(errors="replace")
                problem = f"no report from the shell Pod (exit {end.exit_code}): {said}"
        except TimeoutError:
            report = {"exit": None, "timed_out": True}
        except (ApiError, aiohttp.ClientError, OSError) as error:
            problem = f"the command could not be run in the shell Pod: {error}"
        if problem is not None:
            take(f"\n[{problem}]\n".encode())
        await asyncio.to_thread(self._append_record, str(report.get("record") or ""))
        usage = rusage(report)
        hit = self.meter.command_ended(
            usage, report.get("disk_free"), bool(report.get("at_process_limit")), bytes(kept)
        )
        if hit is None and int(report.get("oom_kills") or 0) > 0:
            hit = LimitHit.MEMORY
        timed_out = bool(report.get("timed_out"))
        return CommandOutcome.collected(
            bytes(kept), total, exit_code=report.get("exit"), timed_out=timed_out, started=started, limit=hit
        )

    def _append_record(self, text: str) -> None:
        if self.shim is not None and text:
            with self.shim.record.open("a") as record:
                record.write(text if text.endswith("\n") else text + "\n")


def parse_report(stderr: bytes) -> dict[str, Any]:
    """`pod_command`'s report: the last line of its stderr."""
    for line in reversed(stderr.decode(errors="replace").strip().splitlines()):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return {}


def rusage(report: Mapping[str, Any]) -> resource.struct_rusage:
    """The reported CPU time and peak memory as the rusage `LimitMeter` reads."""
    fields = [0.0] * 16
    fields[0] = float(report.get("utime") or 0.0)
    fields[1] = float(report.get("stime") or 0.0)
    fields[2] = int(report.get("maxrss_kib") or 0)
    return resource.struct_rusage(fields)
