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
import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from agentmatrix.agent_runner import bubblewrap, host_check, kubectl_record
from agentmatrix.agent_runner.agent_kubeconfig import current_server, sandbox_kubeconfig
from agentmatrix.agent_runner.command_sandbox import CommandOutcome, SandboxUnavailable
from agentmatrix.agent_runner.confined_process import run_confined
from agentmatrix.agent_runner.isolation import (
    STAGE_DISCOVERY,
    STAGE_EXTRA,
    STAGE_HOME,
    STAGE_KUBECTL,
    ExtraBind,
    IsolationError,
    TrialSpace,
    api_route,
)
from agentmatrix.agent_runner.limits import LimitMeter, Limits
from agentmatrix.cluster import kubeconfig as kubeconfig_file


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
        self.confiner = bubblewrap.find_bwrap()  # the program every command runs under
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
            raise SandboxUnavailable(f"{host_check.ISOLATION_UNABLE}: {error}") from error
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
            return ["--ro-bind", STAGE_KUBECTL, f"{bubblewrap.SANDBOX_BIN}/kubectl"]
        root = Path(bubblewrap.SANDBOX_BIN).parent
        return [
            "--ro-bind", f"{STAGE_EXTRA}/shim", f"{bubblewrap.SANDBOX_BIN}/kubectl",
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
            *bubblewrap.isolation_args(min(64 << 20, self.limits.disk_bytes)),
            "--setenv",
            "PATH",
            bubblewrap.SANDBOX_PATH,
            "--setenv",
            "HOME",
            home,
            "--setenv",
            "KUBECONFIG",
            self.kubeconfig,
            "--setenv",
            "GOGC",
            bubblewrap.KUBECTL_GOGC,
        ]
        for name, value in (env or {}).items():
            args += ["--setenv", name, value]
        for path in bubblewrap.ETC_FILES:
            args += ["--ro-bind-try", path, path]
        for index, read_only in enumerate(self.read_only_paths):
            args += ["--ro-bind", f"{STAGE_EXTRA}/ro-{index}", str(read_only)]
        args += [*self._kubectl_binds(), "--bind", STAGE_HOME, home]
        if self.space is not None and self.space.has_discovery_cache:
            # What kubectl would fetch and cache at its first command, shared by every trial:
            # read-only, so that no agent can change what another's kubectl reads.
            args += ["--ro-bind", STAGE_DISCOVERY, f"{home}/.kube/cache/discovery"]
        args += [*bubblewrap.READ_ONLY_ROOT, "--chdir", home, *bubblewrap.limited_shell(self.meter, command)]
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
        return await run_confined(argv, self.space, self.meter, time_limit, output_cap, stdin, stop)

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
        if host_check.host_verified():
            return
        outcome = await self.run("true", time_limit=30, output_cap=4096)
        if outcome.exit_code != 0:
            raise SandboxUnavailable(
                f"{host_check.BUBBLEWRAP_UNABLE} (exit {outcome.exit_code}): {outcome.output.strip()[:500]}"
            )
