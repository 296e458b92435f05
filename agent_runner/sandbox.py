"""Run the agent's commands confined by bubblewrap, in the trial's own namespaces.

What a command sees:
- a fresh root with ``/usr`` (and the ``/bin``, ``/lib*``, ``/sbin`` links into it) read-only, a
  handful of ``/etc`` files a shell and kubectl need, new ``/proc``, a read-only ``/dev`` and a
  small ``/tmp`` of its own; the root itself is read-only;
- ``kubectl`` at ``/opt/agent/bin/kubectl`` (first on PATH): the recording shim
  (``kubectl_record``), read-only, in front of the real binary at ``/opt/agent/real/kubectl``,
  with its record at ``/opt/agent/record`` (writable; evidence only, never the measurement);
- its home ``/home/agent``, the only writable place that lasts from one command to the next (a
  size-limited tmpfs of the trial), holding a copy of the agent's kubeconfig at ``.kube/config``
  (and, if given, kubectl's discovery cache read-only at ``.kube/cache/discovery``);
- an external agent's read-only paths (its program and libraries), at their own paths;
- exactly four environment variables: PATH, HOME, KUBECONFIG and GOGC (for kubectl). The
  runner's environment (the model's API key among it) is cleared;
- a network namespace where only the API server answers (`isolation`), the trial's own user id,
  the trial's resource limits (`limits`), and new user, pid, ipc, uts and cgroup namespaces, all
  capabilities dropped, a new session (no terminal injection).

Everything else on the host (home directories, the runner's code and virtualenv, the
cluster's state and credentials other than the agent's own, other trials' files) does not exist
inside, and the host's other services cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agentmatrix.agent_runner import kubectl_record
from agentmatrix.agent_runner.isolation import (
    STAGE_DISCOVERY,
    STAGE_EXTRA,
    STAGE_HOME,
    STAGE_KUBECTL,
    ApiRoute,
    ExtraBind,
    IsolationError,
    TrialSpace,
    api_route,
)
from agentmatrix.agent_runner.limits import LimitHit, LimitMeter, Limits
from agentmatrix.cluster import kubeconfig as kubeconfig_file

SANDBOX_BIN = "/opt/agent/bin"
SANDBOX_PATH = f"{SANDBOX_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
_ETC_FILES = (
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/alternatives",  # Debian's links for awk, editors and the like
)
_READ_CHUNK = 65_536
PROCESS_POLL_SECONDS = 0.5  # how often a running command's process count is looked at
# kubectl is a Go program that lives for one command: collecting its garbage less often saves about
# a quarter of its CPU.
KUBECTL_GOGC = "400"


class SandboxUnavailable(RuntimeError):
    """Commands cannot be confined here; the message says why and what to install."""


class CommandSandbox(Protocol):
    """Where the agent's commands run: `Sandbox` on this host, `pod_sandbox.PodSandbox` in a Pod."""

    shim: kubectl_record.ShimLayout | None  # `shim.record`: the recording kubectl's record, read here

    async def open_checked(self) -> None: ...

    async def close(self) -> None: ...

    def secrets(self) -> list[str]:
        """Credentials the commands can read that the runner did not give them: to be redacted."""
        ...

    async def run(self, command: str, time_limit: float, output_cap: int) -> CommandOutcome: ...

    async def run_program(
        self,
        program: Sequence[str],
        time_limit: float,
        output_cap: int,
        *,
        env: Mapping[str, str] | None = None,
        stdin: Path | None = None,
        stop: asyncio.Event | None = None,
    ) -> CommandOutcome: ...

    async def write_agent_file(self, name: str, text: str) -> tuple[str, Path]: ...

    async def forward_local_port(self, port: int) -> None: ...


@dataclass(frozen=True)
class CommandOutcome:
    exit_code: int | None  # None when the command was killed for its timeout
    output: str  # stdout and stderr interleaved, at most `output_cap` bytes of it
    output_bytes: int  # how much it printed in all
    truncated: bool
    timed_out: bool
    seconds: float
    limit: LimitHit | None = None  # the trial's limit this command reached, if any


def find_bwrap() -> str:
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(
            "bubblewrap (`bwrap`) is not installed, so the agent's commands cannot be confined; "
            "install the Debian package `bubblewrap` (apt-get install bubblewrap). "
            "Commands are never run unconfined."
        )
    return found


def resolve_kubectl(kubectl: str) -> Path:
    path = Path(kubectl) if os.sep in kubectl else None
    if path is None:
        located = shutil.which(kubectl)
        if located is None:
            raise SandboxUnavailable(f"kubectl binary {kubectl!r} not found on PATH")
        path = Path(located)
    if not path.is_file():
        raise SandboxUnavailable(f"kubectl binary {str(path)!r} does not exist")
    return path.resolve()


def _usr_merged_links() -> list[str]:
    """Bind or link /bin, /lib*, /sbin the way the host has them (links into /usr or real dirs)."""
    args: list[str] = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def _isolation_args(tmp_bytes: int) -> list[str]:
    """bubblewrap's namespaces, and the root it builds: /usr, new /proc, /dev and a small /tmp."""
    return [
        "--unshare-all",
        "--share-net",  # the trial's network namespace, which the command's process has joined
        "--die-with-parent",
        # The command itself is the pid namespace's init: its whole tree's CPU and memory then
        # reach the runner's wait4 (bubblewrap's own init does not pass them on).
        "--as-pid-1",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--ro-bind",
        "/usr",
        "/usr",
        *_usr_merged_links(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(tmp_bytes),
        "--tmpfs",
        "/tmp",
    ]


_READ_ONLY_ROOT = ["--remount-ro", "/dev", "--remount-ro", "/"]

_host_verified = False
LIMITS_UNSET_EXIT = 125
BUBBLEWRAP_UNABLE = "bubblewrap cannot create the sandbox on this host"
ISOLATION_UNABLE = "the trial's namespaces cannot be made on this host"


def verify_host() -> None:
    """Check once that the trial's namespaces and bubblewrap work on this host (raises
    SandboxUnavailable if not). Runners forked from this process afterwards skip their own check."""
    global _host_verified
    try:
        space = TrialSpace.create(api_route("https://127.0.0.1:1"), 1 << 20, Path("/bin/true"), None)
    except (IsolationError, OSError) as error:
        raise SandboxUnavailable(f"{ISOLATION_UNABLE}: {error}") from error
    try:
        meter = LimitMeter(Limits(), space.uid)
        done = subprocess.run(
            [*space.entry_argv(), find_bwrap(), *_isolation_args(1 << 20), *_READ_ONLY_ROOT,
             *limited_shell(meter, "true")],
            capture_output=True,
            text=True,
            timeout=30,
            pass_fds=space.fds,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )  # fmt: skip
    finally:
        space.close_descriptors()
    if done.returncode != 0:
        raise SandboxUnavailable(f"{BUBBLEWRAP_UNABLE} (exit {done.returncode}): {done.stderr.strip()[:500]}")
    _host_verified = True


def limited_shell(meter: LimitMeter, command: str) -> list[str]:
    """`/bin/sh -c COMMAND` under the trial's resource limits (set by a shell that then becomes the
    command's: the command is its sandbox's init, see `_isolation_args`)."""
    wrapper = f'{meter.shell_prefix()} || exit {LIMITS_UNSET_EXIT}; exec /bin/sh -c "$1"'
    return ["/bin/sh", "-c", wrapper, "sh", command]


def sandbox_kubeconfig(source: Path, namespace: str, route: ApiRoute | None) -> dict[str, Any]:
    """The agent's kubeconfig as the sandbox needs it: the namespace as its default and, where the
    forwarder listens elsewhere than the server's own address, the forwarder's address with the
    server's name kept for TLS verification."""
    data = kubeconfig_file.load(source) or {}
    current = data.get("current-context")
    cluster_name = None
    for entry in data.get("contexts") or []:
        if entry.get("name") == current and isinstance(entry.get("context"), dict):
            entry["context"]["namespace"] = namespace
            cluster_name = entry["context"].get("cluster")
    for entry in data.get("clusters") or []:
        cluster = entry.get("cluster")
        if route is not None and entry.get("name") == cluster_name and isinstance(cluster, dict):
            cluster["server"] = route.server
            if route.tls_server_name is not None:
                cluster["tls-server-name"] = route.tls_server_name
    return data


def current_server(data: dict[str, Any]) -> str:
    """The API server URL of the kubeconfig's current context."""
    current = data.get("current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in data.get("contexts") or []}
    clusters = {c.get("name"): c.get("cluster") or {} for c in data.get("clusters") or []}
    cluster = clusters.get(contexts.get(current, {}).get("cluster"))
    if cluster is None and len(clusters) == 1:
        cluster = next(iter(clusters.values()))
    server = (cluster or {}).get("server")
    if not isinstance(server, str):
        raise SandboxUnavailable("the agent's kubeconfig names no API server for its current context")
    return server


class Sandbox:
    """One agent's confinement: its namespaces, home, kubeconfig copy, kubectl and limits.
    `open` before the first command, `close` after the last."""

    home = "/home/agent"

    def __init__(
        self,
        scratch_dir: Path,
        kubeconfig: Path,
        namespace: str,
        kubectl: str = "kubectl",
        discovery_cache: Path | None = None,
        limits: Limits | None = None,
        record_kubectl: bool = True,
        read_only_paths: Sequence[Path] = (),
    ) -> None:
        self.confiner = find_bwrap()  # the program every command runs under
        self.kubectl = resolve_kubectl(kubectl)
        self.scratch = scratch_dir.resolve()
        self.source_kubeconfig = kubeconfig
        self.namespace = namespace
        self.discovery_cache = discovery_cache
        self.limits = limits or Limits()
        self.space: TrialSpace | None = None
        self.meter = LimitMeter(self.limits, None)
        self.read_only_paths = tuple(path.resolve() for path in read_only_paths)
        self.record_kubectl = record_kubectl
        self.shim: kubectl_record.ShimLayout | None = None

    def _install_shim(self, owner: int | None) -> kubectl_record.ShimLayout | None:
        """The recording kubectl, beside the scratch directory (never in it: the agent must not
        rewrite it), its record owned by `owner`, the user the commands run as."""
        if not self.record_kubectl:
            return None
        try:
            return kubectl_record.install(kubectl_record.root_beside(self.scratch), self.kubectl, owner)
        except kubectl_record.RecordUnavailable as exc:
            raise SandboxUnavailable(str(exc)) from exc

    @property
    def kubeconfig(self) -> str:
        """The kubeconfig's path as the command sees it."""
        return f"{self.home}/.kube/config"

    async def open(self) -> None:
        """Make the trial's namespaces and home, put the kubeconfig in it, start the forwarder."""
        source = kubeconfig_file.load(self.source_kubeconfig) or {}
        try:
            route = api_route(current_server(source))
            self.shim = self._install_shim(None)
            self.space = TrialSpace.create(
                route, self.limits.disk_bytes, self.kubectl, self.discovery_cache, self._extra_binds()
            )
            if self.shim is not None:
                for path in (self.shim.record_dir, self.shim.record):
                    os.chown(path, self.space.uid, self.space.uid)
        except (IsolationError, OSError) as error:
            raise SandboxUnavailable(f"{ISOLATION_UNABLE}: {error}") from error
        self.meter = LimitMeter(self.limits, self.space.uid)
        config = sandbox_kubeconfig(self.source_kubeconfig, self.namespace, route)
        self.space.write_home_file(".kube/config", kubeconfig_file.dump(config))
        await self.space.serve()

    async def close(self) -> None:
        if self.space is not None:
            await self.space.aclose()
            self.space = None

    def program_argv(self, program: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        """The command line that runs `program` confined; `env` adds variables to the four."""
        return self.argv(shlex.join(program), env)

    def _extra_binds(self) -> dict[str, ExtraBind]:
        """What the trial's mount namespace stages for bubblewrap besides kubectl and the cache."""
        extra = {f"ro-{index}": ExtraBind(path) for index, path in enumerate(self.read_only_paths)}
        if self.shim is not None:
            extra["shim"] = ExtraBind(self.shim.shim)
            extra["record"] = ExtraBind(self.shim.record_dir, writable=True)
        return extra

    def _kubectl_binds(self) -> list[str]:
        """The agent's `kubectl`: the real binary, or the recording shim in front of it."""
        if self.shim is None:
            return ["--ro-bind", STAGE_KUBECTL, f"{SANDBOX_BIN}/kubectl"]
        root = Path(SANDBOX_BIN).parent
        return [
            "--ro-bind", f"{STAGE_EXTRA}/shim", f"{SANDBOX_BIN}/kubectl",
            "--ro-bind", STAGE_KUBECTL, str(root / "real" / "kubectl"),
            "--bind", f"{STAGE_EXTRA}/record", str(root / "record"),
        ]  # fmt: skip

    def argv(self, command: str, env: Mapping[str, str] | None = None) -> list[str]:
        """The command line that runs the shell command `command` confined."""
        home = self.home
        assert self.space is not None
        args = [
            *self.space.entry_argv(),
            self.confiner,
            *_isolation_args(min(64 << 20, self.limits.disk_bytes)),
            "--setenv",
            "PATH",
            SANDBOX_PATH,
            "--setenv",
            "HOME",
            home,
            "--setenv",
            "KUBECONFIG",
            self.kubeconfig,
            "--setenv",
            "GOGC",
            KUBECTL_GOGC,
        ]
        for name, value in (env or {}).items():
            args += ["--setenv", name, value]
        for path in _ETC_FILES:
            args += ["--ro-bind-try", path, path]
        for index, read_only in enumerate(self.read_only_paths):
            args += ["--ro-bind", f"{STAGE_EXTRA}/ro-{index}", str(read_only)]
        args += [*self._kubectl_binds(), "--bind", STAGE_HOME, home]
        if self.space is not None and self.space.has_discovery_cache:
            # What kubectl would fetch and cache at its first command, shared by every trial:
            # read-only, so that no agent can change what another's kubectl reads.
            args += ["--ro-bind", STAGE_DISCOVERY, f"{home}/.kube/cache/discovery"]
        args += [*_READ_ONLY_ROOT, "--chdir", home, *limited_shell(self.meter, command)]
        return args

    async def run(self, command: str, time_limit: float, output_cap: int) -> CommandOutcome:
        return await self._execute(self.argv(command), time_limit, output_cap)

    async def forward_local_port(self, port: int) -> None:
        """Let the commands reach the host's 127.0.0.1:`port` (an external agent's model proxy)."""
        assert self.space is not None
        await self.space.forward(port)

    def secrets(self) -> list[str]:
        return []

    async def write_agent_file(self, name: str, text: str) -> tuple[str, Path]:
        """Write a file into the agent's home: its path inside, and where the runner can read it."""
        assert self.space is not None
        self.space.write_home_file(name, text)
        return f"{self.home}/{name}", Path(f"/proc/self/fd/{self.space.home_fd}/{name}")

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
        """Run `program` confined (with `stdin` from a file), stopped after `time_limit` seconds or
        when `stop` is set; either way, what it printed until then is in the outcome."""
        return await self._execute(self.program_argv(program, env), time_limit, output_cap, stdin, stop)

    async def _execute(
        self,
        argv: list[str],
        time_limit: float,
        output_cap: int,
        stdin: Path | None = None,
        stop: asyncio.Event | None = None,
    ) -> CommandOutcome:
        if self.space is None:
            raise RuntimeError("the sandbox is not open: await open() before running commands")
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
                pass_fds=self.space.fds,
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
                if await asyncio.to_thread(self.meter.processes_at_limit):
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
                at_process_limit = watching in done or self.meter.processes_at_limit()
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
        hit = self.meter.command_ended(usage, self.space.disk_free(), at_process_limit, bytes(kept))
        return CommandOutcome(
            exit_code=None if timed_out else proc.returncode,
            output=bytes(kept).decode("utf-8", errors="replace"),
            output_bytes=total,
            truncated=total > len(kept),
            timed_out=timed_out,
            seconds=time.monotonic() - started,
            limit=hit,
        )

    async def open_checked(self) -> None:
        """`open`, then `check`; closed again (and SandboxUnavailable raised) if it cannot work."""
        try:
            await self.open()
            await self.check()
        except SandboxUnavailable:
            await self.close()
            raise

    async def check(self) -> None:
        """Run a trivial command confined; raise if this confinement cannot work here."""
        if _host_verified:
            return
        outcome = await self.run("true", time_limit=30, output_cap=4096)
        if outcome.exit_code != 0:
            raise SandboxUnavailable(
                f"{BUBBLEWRAP_UNABLE} (exit {outcome.exit_code}): {outcome.output.strip()[:500]}"
            )


def _kill_group(pid: int) -> None:
    """bwrap leads its own process group; its sandboxed children die with it (--die-with-parent)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
