"""The agent's driver: the agent runner, started for one trial, as a local process or a Pod.

- `process` (the default): `agentmatrix agent run ...` on the operator's host, forked by a warm
  `runner_host`, with a kubeconfig for the trial's `agent` ServiceAccount (a bound token minted
  for the trial), so the API server applies RBAC and admission to every command exactly as for a Pod. This is
  the only mode that works where pods do not really run (kwok).
- `pod`: a Pod `agent-driver` in the sandbox, running the runner image as the `agent`
  ServiceAccount; the transcript and result come back through the Pod's log. The container is the
  agent's boundary: the runner runs as root and each command as an unprivileged user
  (`--confinement user`), since bubblewrap usually cannot make namespaces inside a container.

The model's API key (if any) reaches the runner only through an environment variable (process)
or a Secret reference (pod), never through arguments, the CR or the transcript.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from agentmatrix.api.replicationeval import AgentSpec, ModelSpec
from agentmatrix.cluster import processes
from agentmatrix.kube import ApiError, Kube
from agentmatrix.operator import runner_host

API_KEY_ENV = "AGENTMATRIX_MODEL_API_KEY"
DRIVER_POD = "agent-driver"
COMMAND_UID = 65532  # the unprivileged user the agent's commands run as in the driver Pod
DISCOVERY_CACHE_TTL = 3600.0
TRANSCRIPT_MARK = "=== agentmatrix transcript ==="
RESULT_MARK = "=== agentmatrix result ==="
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The agent's identity inside the driver Pod: its own mounted ServiceAccount token.
IN_POD_KUBECONFIG = f"""apiVersion: v1
kind: Config
clusters:
- name: in-cluster
  cluster:
    server: https://kubernetes.default.svc
    certificate-authority: {SERVICE_ACCOUNT_DIR}/ca.crt
users:
- name: agent
  user:
    tokenFile: {SERVICE_ACCOUNT_DIR}/token
contexts:
- name: in-cluster
  context: {{cluster: in-cluster, user: agent}}
current-context: in-cluster
"""


@dataclass
class Launch:
    """Everything one agent run is given."""

    namespace: str
    workdir: Path
    system_prompt: str
    task: str
    model: ModelSpec
    base_url: str | None  # None: play `model.replay` with the runner's own replay server
    model_name: str | None
    seed: int | None
    max_steps: int
    time_limit: float
    kubeconfig: Path | None = None  # process mode
    api_key: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    agent: AgentSpec | None = None  # an external agent under test instead of the built-in loop

    @property
    def transcript_path(self) -> Path:
        return self.workdir / "transcript.jsonl"

    @property
    def result_path(self) -> Path:
        return self.workdir / "result.json"


class Prepared(Protocol):
    async def start(self, launch: Launch) -> Running: ...

    async def discard(self) -> None:
        """The trial ended before its agent started."""
        ...


class Driver(Protocol):
    async def prepare(self, namespace: str, workdir: Path, api_key: str | None) -> Prepared:
        """Get ready to run an agent in `namespace` (called as the trial begins)."""
        ...


class Running(Protocol):
    def describe(self) -> dict[str, Any]:
        """What the namespace annotation records, to find and stop this driver after a restart."""
        ...

    async def wait(self) -> int | None:
        """Wait for the agent to end; its exit code (None if unknown)."""
        ...

    async def stop(self) -> None: ...

    async def collect(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The transcript lines and the runner's result (None if it wrote none)."""
        ...


def runner_arguments(launch: Launch, *, kubectl: str | None, in_pod: bool) -> list[str]:
    """The runner's command-line options (see `agentmatrix agent run --help`)."""
    workdir = Path("/agent") if in_pod else launch.workdir
    inputs = Path("/inputs") if in_pod else launch.workdir
    args = [
        "--namespace", launch.namespace,
        "--kubeconfig", str(inputs / "kubeconfig") if in_pod else str(launch.kubeconfig),
        "--system-prompt-file", str(workdir / "system-prompt.txt"),
        "--task-file", str(workdir / "task.txt"),
        "--transcript", str(workdir / "transcript.jsonl"),
        "--result", str(workdir / "result.json"),
        "--scratch-dir", str(workdir / "scratch"),
        "--scaffold", launch.model.scaffold,
        "--max-steps", str(launch.max_steps),
        "--max-tokens", str(launch.model.max_tokens),
        "--temperature", str(launch.model.temperature),
        "--time-limit", str(launch.time_limit),
    ]  # fmt: skip
    if launch.base_url is None:
        args += ["--replay-script", str(inputs / "replay.yaml")]
    else:
        args += ["--base-url", launch.base_url, "--model", launch.model_name or ""]
    if launch.seed is not None:
        args += ["--seed", str(launch.seed)]
    args += ["--thinking" if launch.model.thinking else "--no-thinking"]
    if launch.api_key is not None:
        args += ["--api-key-env", API_KEY_ENV]
    if kubectl:
        args += ["--kubectl", kubectl]
    if launch.agent is not None and launch.agent.command is not None:
        args += ["--agent-command", json.dumps(list(launch.agent.command))]
        if not in_pod:
            for path in launch.agent.read_only_paths or ():
                args += ["--read-only-path", path]
    return args


def replay_script(launch: Launch) -> str:
    steps = [
        {k: v for k, v in (("command", step.command), ("thought", step.thought)) if v}
        for step in (launch.model.replay.steps if launch.model.replay else ())
    ]
    return yaml.safe_dump(steps, sort_keys=False)


def input_files(launch: Launch) -> dict[str, str]:
    files = {"system-prompt.txt": launch.system_prompt, "task.txt": launch.task}
    if launch.base_url is None:
        files["replay.yaml"] = replay_script(launch)
    return files


def write_inputs(launch: Launch) -> None:
    launch.workdir.mkdir(parents=True, exist_ok=True)
    (launch.workdir / "scratch").mkdir(exist_ok=True)
    for name, text in input_files(launch).items():
        (launch.workdir / name).write_text(text)


def read_transcript(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return parse_jsonl(path.read_text(errors="replace").splitlines())


def parse_jsonl(lines: Sequence[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                out.append(value)
    return out


def read_result(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# --- local process ----------------------------------------------------------------------------
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
                self.made_at = time.monotonic() if code == 0 else None
            return root / "discovery" if self.made_at is not None else None


@dataclass
class ProcessDriver:
    """Runs each trial's agent as a process on the operator's host, forked by a shared warm
    `RunnerHost` (started as the first trial begins, so its import overlaps the sandbox's set-up)."""

    kubectl: str | None = None
    host: RunnerHost = field(default_factory=RunnerHost)
    discovery: DiscoveryCache | None = None

    async def prepare(self, namespace: str, workdir: Path, api_key: str | None) -> PreparedProcess:
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        await self.host.warm()
        return PreparedProcess(self, api_key)


@dataclass
class PreparedProcess:
    driver: ProcessDriver
    api_key: str | None

    async def start(self, launch: Launch) -> RunningProcess:
        await asyncio.to_thread(write_inputs, launch)
        arguments = runner_arguments(launch, kubectl=self.driver.kubectl, in_pod=False)
        if self.driver.discovery is not None and launch.kubeconfig is not None:
            cache = await self.driver.discovery.directory(
                self.driver.kubectl or "kubectl", launch.kubeconfig, launch.workdir.parent / "kubectl-cache"
            )
            if cache is not None:
                arguments += ["--discovery-cache", str(cache)]
        env = {API_KEY_ENV: self.api_key} if self.api_key is not None else {}
        pid, ticks, exited = await self.driver.host.spawn(
            launch.namespace, arguments, launch.workdir / "driver.log", env
        )
        return RunningProcess(launch, processes.RecordedProcess("driver", pid, ticks, ()), exited)

    async def discard(self) -> None:
        return None


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


# --- Pod ------------------------------------------------------------------------------------
@dataclass
class PodDriver:
    """Runs the runner in a Pod of the sandbox as the `agent` ServiceAccount.

    The Pod gets the prompt and task through a ConfigMap and the API key through a Secret in the
    sandbox (deleted with it); it prints the transcript and result to its log after the run.
    """

    kube: Kube
    image: str

    async def prepare(self, namespace: str, workdir: Path, api_key: str | None) -> PodDriver:
        return self

    async def discard(self) -> None:
        return None

    async def start(self, launch: Launch) -> RunningPod:
        if launch.agent is not None and launch.agent.image is not None:
            return await self._start_agent_image(launch, launch.agent.image)
        ns = launch.namespace
        inputs = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{DRIVER_POD}-inputs", "namespace": ns},
            "data": {**input_files(launch), "kubeconfig": IN_POD_KUBECONFIG},
        }
        await self.kube.create_or_keep(f"/api/v1/namespaces/{ns}/configmaps", inputs)
        env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in launch.extra_env.items()]
        if launch.api_key is not None:
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{DRIVER_POD}-model", "namespace": ns},
                "stringData": {"apiKey": launch.api_key},
            }
            await self.kube.create_or_keep(f"/api/v1/namespaces/{ns}/secrets", secret)
            env.append(
                {
                    "name": API_KEY_ENV,
                    "valueFrom": {"secretKeyRef": {"name": f"{DRIVER_POD}-model", "key": "apiKey"}},
                }
            )
        run = " ".join(
            [
                "python",
                "-m",
                "agentmatrix.agent_runner",
                "run",
                *(_quote(a) for a in runner_arguments(launch, kubectl=None, in_pod=True)),
                "--confinement",
                "user",
                "--command-uid",
                str(COMMAND_UID),
            ]
        )
        script = (
            "mkdir -p /agent/scratch && cp /inputs/*.txt /agent/ && "
            f"{run}; code=$?; echo '{TRANSCRIPT_MARK}'; cat /agent/transcript.jsonl 2>/dev/null; "
            f"echo '{RESULT_MARK}'; cat /agent/result.json 2>/dev/null; exit $code"
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": DRIVER_POD,
                "namespace": ns,
                "labels": {"app.kubernetes.io/name": DRIVER_POD},
            },
            "spec": {
                "serviceAccountName": "agent",
                "automountServiceAccountToken": True,
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "runner",
                        "image": self.image,
                        "command": ["sh", "-c", script],
                        "env": env,
                        # The runner as root, only to run each of the agent's commands as
                        # COMMAND_UID, which cannot read the runner's environment (the key).
                        "securityContext": {
                            "runAsUser": 0,
                            "runAsNonRoot": False,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"], "add": ["SETUID", "SETGID", "CHOWN", "KILL"]},
                        },
                        "volumeMounts": [
                            {"name": "inputs", "mountPath": "/inputs"},
                            {"name": "work", "mountPath": "/agent"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "inputs", "configMap": {"name": f"{DRIVER_POD}-inputs"}},
                    {"name": "work", "emptyDir": {}},
                ],
            },
        }
        await self.kube.create_or_keep(f"/api/v1/namespaces/{ns}/pods", pod)
        return RunningPod(self.kube, ns)

    async def _start_agent_image(self, launch: Launch, image: str) -> RunningPod:
        """The agent's own image as the Pod `agent-driver`, as the `agent` ServiceAccount, with the
        prompt in /inputs/prompt.txt, KUBECONFIG for its token and the model as OPENAI_BASE_URL /
        OPENAI_API_KEY. No runner runs in it, so there is no recorded kubectl and no step limit:
        the trial's time limit stops it, and the API server measures what it did."""
        ns = launch.namespace
        prompt = f"{launch.system_prompt}\n\n{launch.task}\n"
        inputs = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{DRIVER_POD}-inputs", "namespace": ns},
            "data": {"prompt.txt": prompt, "task.txt": launch.task, "kubeconfig": IN_POD_KUBECONFIG},
        }
        await self.kube.create_or_keep(f"/api/v1/namespaces/{ns}/configmaps", inputs)
        env: list[dict[str, Any]] = [
            {"name": "KUBECONFIG", "value": "/inputs/kubeconfig"},
            {"name": "AGENTMATRIX_PROMPT_FILE", "value": "/inputs/prompt.txt"},
            {"name": "AGENTMATRIX_NAMESPACE", "value": ns},
            {"name": "OPENAI_MODEL", "value": launch.model_name or ""},
        ]
        if launch.base_url is not None:
            env += [{"name": "OPENAI_BASE_URL", "value": launch.base_url},
                    {"name": "OPENAI_API_BASE", "value": launch.base_url}]  # fmt: skip
        if launch.api_key is not None:
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{DRIVER_POD}-model", "namespace": ns},
                "stringData": {"apiKey": launch.api_key},
            }
            await self.kube.create_or_keep(f"/api/v1/namespaces/{ns}/secrets", secret)
            env.append(
                {
                    "name": "OPENAI_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": f"{DRIVER_POD}-model", "key": "apiKey"}},
                }
            )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": DRIVER_POD,
                "namespace": ns,
                "labels": {"app.kubernetes.io/name": DRIVER_POD},
            },
            "spec": {
                "serviceAccountName": "agent",
                "automountServiceAccountToken": True,
                "restartPolicy": "Never",
                "activeDeadlineSeconds": max(1, int(launch.time_limit)),
                "containers": [
                    {
                        "name": "agent",
                        "image": image,
                        "env": env,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "inputs", "mountPath": "/inputs"}],
                    }
                ],
                "volumes": [{"name": "inputs", "configMap": {"name": f"{DRIVER_POD}-inputs"}}],
            },
        }
        await self.kube.create_or_keep(f"/api/v1/namespaces/{ns}/pods", pod)
        return RunningAgentImage(self.kube, ns)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


class RunningPod:
    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self._log: str | None = None

    @property
    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{DRIVER_POD}"

    def describe(self) -> dict[str, Any]:
        return {"kind": "pod", "pod": DRIVER_POD}

    async def wait(self) -> int | None:
        while True:
            pod = await self.kube.get(self._path)
            if pod is None:
                return None
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (status.get("state") or {}).get("terminated")
                if terminated:
                    return int(terminated.get("exitCode", 0))
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        await self.kube.delete(self._path)

    async def collect(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        text = await self.kube.request_text(f"{self._path}/log")
        transcript_part, _, result_part = text.partition(RESULT_MARK)
        _, _, transcript_part = transcript_part.partition(TRANSCRIPT_MARK)
        transcript = parse_jsonl(transcript_part.splitlines())
        try:
            result = json.loads(result_part.strip() or "null")
        except ValueError:
            result = None
        return transcript, result if isinstance(result, dict) else None


class RunningAgentImage(RunningPod):
    """An agent image's Pod: its log is the agent's own output, and its exit code the result."""

    async def collect(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        pod = await self.kube.get(self._path)
        code: int | None = None
        for status in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated")
            if terminated:
                code = int(terminated.get("exitCode", 0))
        try:
            log = await self.kube.request_text(f"{self._path}/log")
        except ApiError:  # a Pod that never ran has no log
            log = ""
        transcript = [{"type": "agent_output", "output": log[-65_536:], "exit_code": code}]
        if code is None:
            return transcript, None
        return transcript, {"end_reason": "finished", "message": f"the agent exited with code {code}"}
