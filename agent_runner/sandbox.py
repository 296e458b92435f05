"""Run the agent's commands confined by bubblewrap.

What a command sees:
- a fresh root (tmpfs) with ``/usr`` (and the ``/bin``, ``/lib*``, ``/sbin`` links into it)
  read-only, a handful of ``/etc`` files a shell and kubectl need, new ``/proc``, ``/dev`` and
  an empty ``/tmp``;
- ``kubectl`` at ``/opt/agent/bin/kubectl`` (first on PATH): the recording shim
  (``kubectl_record``), read-only, in front of the real binary at ``/opt/agent/real/kubectl``,
  with its record at ``/opt/agent/record`` (writable; evidence only, never the measurement);
- the scratch directory, the only writable place, as its working directory and HOME, holding a
  copy of the agent's kubeconfig at ``.kube/config`` (and, if given, kubectl's discovery cache
  read-only at ``.kube/cache/discovery``);
- exactly four environment variables: PATH, HOME, KUBECONFIG and GOGC (for kubectl). The
  runner's environment (the model's API key among it) is cleared;
- new user, pid, ipc, uts and cgroup namespaces, all capabilities dropped, a new session (no
  terminal injection); the network namespace is shared, because the API server is on 127.0.0.1.

Everything else on the host (home directories, the runner's code and virtualenv, the
cluster's state and credentials other than the agent's own) does not exist inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentmatrix.agent_runner import kubectl_record
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
# kubectl is a Go program that lives for one command: collecting its garbage less often saves about
# a quarter of its CPU.
KUBECTL_GOGC = "400"


class SandboxUnavailable(RuntimeError):
    """Commands cannot be confined here; the message says why and what to install."""


@dataclass(frozen=True)
class CommandOutcome:
    exit_code: int | None  # None when the command was killed for its timeout
    output: str  # stdout and stderr interleaved, at most `output_cap` bytes of it
    output_bytes: int  # how much it printed in all
    truncated: bool
    timed_out: bool
    seconds: float


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


def _isolation_args() -> list[str]:
    """bubblewrap's namespaces, and the root it builds: /usr, new /proc, /dev and /tmp."""
    return [
        "--unshare-all",
        "--share-net",
        "--die-with-parent",
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
        "--tmpfs",
        "/tmp",
    ]


_host_verified = False
BUBBLEWRAP_UNABLE = "bubblewrap cannot create the sandbox on this host"


def verify_host() -> None:
    """Check once that bubblewrap can make its namespaces on this host (raises SandboxUnavailable
    if not). Runners forked from this process afterwards skip their own check of the same host."""
    global _host_verified
    done = subprocess.run(
        [find_bwrap(), *_isolation_args(), "/bin/true"], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise SandboxUnavailable(f"{BUBBLEWRAP_UNABLE} (exit {done.returncode}): {done.stderr.strip()[:500]}")
    _host_verified = True


class Sandbox:
    """One agent's confinement: its scratch directory, kubeconfig copy and kubectl."""

    def __init__(
        self,
        scratch_dir: Path,
        kubeconfig: Path,
        namespace: str,
        kubectl: str = "kubectl",
        discovery_cache: Path | None = None,
        record_kubectl: bool = True,
        read_only_paths: Sequence[Path] = (),
    ) -> None:
        self.confiner = self._confiner()
        self.kubectl = resolve_kubectl(kubectl)
        self.scratch = scratch_dir.resolve()
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self._install_kubeconfig(kubeconfig, namespace)
        self.discovery_cache = discovery_cache
        self.read_only_paths = tuple(path.resolve() for path in read_only_paths)
        self.shim: kubectl_record.ShimLayout | None = None
        if record_kubectl:
            try:
                self.shim = kubectl_record.install(
                    kubectl_record.root_beside(self.scratch), self.kubectl, self._record_owner()
                )
            except kubectl_record.RecordUnavailable as exc:
                raise SandboxUnavailable(str(exc)) from exc

    def _record_owner(self) -> int | None:
        """Who the shim's record belongs to (the user the commands run as, when not the runner's)."""
        return None

    def _confiner(self) -> str:
        """The program every command runs under."""
        return find_bwrap()

    def _install_kubeconfig(self, source: Path, namespace: str) -> Path:
        """Copy the agent's kubeconfig into scratch, with the namespace as its default."""
        data = kubeconfig_file.load(source) or {}
        current = data.get("current-context")
        for entry in data.get("contexts") or []:
            if entry.get("name") == current and isinstance(entry.get("context"), dict):
                entry["context"]["namespace"] = namespace
        target = self.scratch / ".kube" / "config"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(kubeconfig_file.dump(data))
        target.chmod(0o600)
        return target

    def argv(self, command: str) -> list[str]:
        return self.program_argv(["/bin/sh", "-c", command])

    def _kubectl_binds(self) -> list[str]:
        """The agent's `kubectl`: the real binary, or the recording shim in front of it."""
        if self.shim is None:
            return ["--ro-bind", str(self.kubectl), f"{SANDBOX_BIN}/kubectl"]
        root = Path(SANDBOX_BIN).parent
        return [
            "--ro-bind", str(self.shim.shim), f"{SANDBOX_BIN}/kubectl",
            "--ro-bind", str(self.kubectl), str(root / "real" / "kubectl"),
            "--bind", str(self.shim.record_dir), str(root / "record"),
        ]  # fmt: skip

    def program_argv(self, program: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        """bubblewrap's command line for `program`, confined; `env` adds variables to the four."""
        scratch = str(self.scratch)
        args = [
            self.confiner,
            *_isolation_args(),
            "--setenv",
            "PATH",
            SANDBOX_PATH,
            "--setenv",
            "HOME",
            scratch,
            "--setenv",
            "KUBECONFIG",
            str(self.kubeconfig),
            "--setenv",
            "GOGC",
            KUBECTL_GOGC,
        ]
        for name, value in (env or {}).items():
            args += ["--setenv", name, value]
        for etc_file in _ETC_FILES:
            args += ["--ro-bind-try", etc_file, etc_file]
        for path in self.read_only_paths:
            args += ["--ro-bind", str(path), str(path)]
        args += [
            *self._kubectl_binds(),
            "--bind",
            scratch,
            scratch,
        ]
        if self.discovery_cache is not None:
            # What kubectl would fetch and cache at its first command, shared by every trial:
            # read-only, so that no agent can change what another's kubectl reads.
            args += ["--ro-bind-try", str(self.discovery_cache), f"{scratch}/.kube/cache/discovery"]
        args += ["--chdir", scratch, *program]
        return args

    def _spawn_options(self, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """How the confining program is started (bubblewrap sets the command's own environment)."""
        return {"env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}}

    async def run(self, command: str, time_limit: float, output_cap: int) -> CommandOutcome:
        return await self.run_program(["/bin/sh", "-c", command], time_limit, output_cap)

    async def run_program(
        self,
        program: Sequence[str],
        time_limit: float,
        output_cap: int,
        *,
        env: Mapping[str, str] | None = None,
        stdin: Path | None = None,
    ) -> CommandOutcome:
        """Run `program` confined (with `stdin` from a file), stopped after `time_limit` seconds."""
        started = time.monotonic()
        source = os.open(stdin, os.O_RDONLY) if stdin is not None else asyncio.subprocess.DEVNULL
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.program_argv(program, env),
                stdin=source,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                **self._spawn_options(env),
            )
        finally:
            if stdin is not None:
                os.close(source)
        kept = bytearray()
        total = 0

        async def drain() -> None:
            nonlocal total
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(_READ_CHUNK):
                total += len(chunk)
                room = output_cap - len(kept)
                if room > 0:
                    kept.extend(chunk[:room])
            await proc.wait()

        timed_out = False
        try:
            await asyncio.wait_for(drain(), time_limit)
        except TimeoutError:
            timed_out = True
            _kill_group(proc.pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            raise
        return CommandOutcome(
            exit_code=None if timed_out else proc.returncode,
            output=bytes(kept).decode("utf-8", errors="replace"),
            output_bytes=total,
            truncated=total > len(kept),
            timed_out=timed_out,
            seconds=time.monotonic() - started,
        )

    async def check(self) -> None:
        """Run a trivial command confined; raise if this confinement cannot work here."""
        if self._verified_by_host():
            return
        outcome = await self.run("true", time_limit=30, output_cap=4096)
        if outcome.exit_code != 0:
            raise SandboxUnavailable(
                f"{self._unable()} (exit {outcome.exit_code}): {outcome.output.strip()[:500]}"
            )

    def _verified_by_host(self) -> bool:
        return _host_verified

    def _unable(self) -> str:
        return BUBBLEWRAP_UNABLE


class UserSandbox(Sandbox):
    """The confinement inside a container, where the container is the boundary and bubblewrap
    usually cannot make namespaces: the runner runs as root, each command as an unprivileged user
    (`uid`, no supplementary groups) in a new session, with only PATH, HOME, KUBECONFIG and GOGC in
    its environment, the scratch directory (owned by that user) as its working directory and HOME.
    The runner's environment, the model's key among it, and everything else of root's stay out of
    the user's reach: another user's /proc/PID/environ and 0400 files cannot be read."""

    def __init__(
        self,
        scratch_dir: Path,
        kubeconfig: Path,
        namespace: str,
        kubectl: str = "kubectl",
        uid: int = 65532,
        read_only_paths: Sequence[Path] = (),
    ) -> None:
        self.uid = uid
        super().__init__(scratch_dir, kubeconfig, namespace, kubectl, read_only_paths=read_only_paths)
        for path in (self.scratch, *self.scratch.rglob("*")):
            os.chown(path, uid, uid, follow_symlinks=False)

    def _confiner(self) -> str:
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "running the agent's commands as another user needs the runner to run as root "
                "(in the driver Pod: runAsUser 0 with the SETUID, SETGID, CHOWN and KILL capabilities)"
            )
        return "/bin/sh"

    def _record_owner(self) -> int | None:
        return self.uid

    def program_argv(self, program: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        return list(program)

    def _spawn_options(self, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        kubectl_dir = self.shim.shim.parent if self.shim is not None else self.kubectl.parent
        environment = {
            "PATH": f"{kubectl_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.scratch),
            "KUBECONFIG": str(self.kubeconfig),
            "GOGC": KUBECTL_GOGC,
            **(env or {}),
        }
        return {
            "env": environment, "cwd": self.scratch, "user": self.uid, "group": self.uid, "extra_groups": [],
        }  # fmt: skip

    def _verified_by_host(self) -> bool:
        return False  # the host's check is of bubblewrap, not of this

    def _unable(self) -> str:
        return f"cannot run commands as uid {self.uid} here"


def _kill_group(pid: int) -> None:
    """bwrap leads its own process group; its sandboxed children die with it (--die-with-parent)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
