"""The namespaces one trial's agent lives in, held by its runner for the whole run.

- A **network namespace** whose only listener is the runner's forwarder to the API server: on
  the API server's own address (``127.0.0.1:PORT`` for the local cluster, so the kubeconfig and
  the server certificate's SANs stay as they are), or on ``127.0.0.1:PORT`` with the original
  host as ``tls-server-name`` when the server is reached by a name or another address. Nothing
  else exists in it: no other port of the host, no model endpoint, no route out, except the
  ports `forward` adds, each to the same port of the host's 127.0.0.1 (an external agent's model
  proxy, never the model endpoint itself).
- A **mount namespace** with a size-limited tmpfs for the agent's home (its only writable place:
  the disk limit) next to read-only bind mounts of kubectl and kubectl's shared discovery cache,
  and of whatever else the sandbox shows (`extra`: the recording kubectl, an external agent's
  read-only paths, and the recording kubectl's record, the one writable extra).
  It is private to the runner: the host never sees it, and it is gone when the runner ends.
- A **user id of its own** (``UID_BASE`` + a per-runner number) that owns the home and runs every
  command, so that the process limit (RLIMIT_NPROC) counts this trial's processes only.

Each command enters both namespaces and becomes that user with nsenter before bubblewrap, which
then adds the rest (user, pid, ipc, uts, cgroup namespaces).
Making the namespaces needs root (CAP_SYS_ADMIN), as the runner has on the operator's host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import ipaddress
import itertools
import os
import shutil
import socket
import stat
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000
_MS_BIND = 0x1000
_MS_RDONLY = 0x1
_MS_REMOUNT = 0x20
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sH22s"

UID_BASE = 0x70000000  # far above any uid a system hands out; one uid per running runner
STAGE = "/tmp"  # overmounted with the trial's tmpfs, in the runner's private mount namespace only
STAGE_HOME = f"{STAGE}/home"
STAGE_KUBECTL = f"{STAGE}/kubectl"
STAGE_DISCOVERY = f"{STAGE}/discovery"
STAGE_EXTRA = f"{STAGE}/extra"
_RELAY_CHUNK = 65_536

_libc = ctypes.CDLL(None, use_errno=True)
_sequence = itertools.count()


class IsolationError(RuntimeError):
    """The trial's namespaces could not be made; the message says why."""


@dataclass(frozen=True)
class ExtraBind:
    """A host file or directory the sandbox shows, staged at ``STAGE_EXTRA/<name>``."""

    source: Path
    writable: bool = False


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise IsolationError(f"{what}: {os.strerror(error)}")


def _in_new_thread(work: Callable[[], None]) -> None:
    """Run `work` on a thread of its own: namespaces it unshares are that thread's alone."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as error:  # re-raised in the caller
            failure.append(error)

    thread = threading.Thread(target=target, name="agentmatrix-isolation")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def find_nsenter() -> str:
    found = shutil.which("nsenter")
    if found is None:
        raise IsolationError("nsenter (Debian package util-linux) is needed to enter the trial's namespaces")
    return found


def trial_uid() -> int:
    """A user id no other live runner uses: from this process's pid and a per-process count."""
    return UID_BASE + (os.getpid() << 4) + (next(_sequence) & 0xF)


@dataclass(frozen=True)
class ApiRoute:
    """Where the agent's kubectl connects inside the namespace, and where that really leads."""

    listen_host: str
    listen_port: int
    upstream_host: str
    upstream_port: int
    server: str  # the kubeconfig's server URL inside the sandbox
    tls_server_name: str | None  # set when the host in `server` is not the certificate's name


def api_route(server: str) -> ApiRoute:
    """The forwarder's address for an API server URL (https only, as the API server speaks)."""
    parts = urlsplit(server)
    if parts.scheme != "https" or not parts.hostname:
        raise IsolationError(f"the agent's kubeconfig names {server!r}: an https:// API server URL is needed")
    port = parts.port or 443
    host = parts.hostname
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return ApiRoute(host, port, host, port, server, None)
    return ApiRoute("127.0.0.1", port, host, port, f"https://127.0.0.1:{port}", host)


@dataclass
class TrialSpace:
    """The namespaces of one trial (see the module's docstring); `close` releases them."""

    uid: int
    route: ApiRoute
    disk_bytes: int
    net_fd: int = -1
    mnt_fd: int = -1
    home_fd: int = -1  # the tmpfs home, for writing into it and measuring it from the host side
    has_discovery_cache: bool = False
    _listener: socket.socket | None = None
    _server: asyncio.Server | None = None
    _forwards: list[asyncio.Server] = field(default_factory=list)
    _relays: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def create(
        cls,
        route: ApiRoute,
        disk_bytes: int,
        kubectl: Path,
        discovery_cache: Path | None,
        extra: Mapping[str, ExtraBind] | None = None,
    ) -> TrialSpace:
        if os.geteuid() != 0:
            raise IsolationError(
                "giving the agent's commands a network namespace, a user and a disk of their own needs "
                "the runner to run as root (CAP_SYS_ADMIN)"
            )
        space = cls(trial_uid(), route, disk_bytes)
        try:
            _in_new_thread(space._make_network)
            _in_new_thread(lambda: space._make_mounts(kubectl, discovery_cache, extra or {}))
        except BaseException:
            space.close_descriptors()
            raise
        return space

    def _make_network(self) -> None:
        _check(_libc.unshare(CLONE_NEWNET), "cannot create a network namespace")
        self.net_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            request = struct.pack(_IFREQ, b"lo", 0, b"")
            flags = struct.unpack(_IFREQ, fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(probe, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP, b""))
        family = socket.AF_INET6 if ":" in self.route.listen_host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((self.route.listen_host, self.route.listen_port))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener

    def _make_mounts(
        self, kubectl: Path, discovery_cache: Path | None, extra: Mapping[str, ExtraBind]
    ) -> None:
        _check(_libc.unshare(CLONE_NEWNS), "cannot create a mount namespace")
        _check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "cannot make mounts private")
        # Opened in the new namespace (a bind source must belong to it) and before the tmpfs
        # covers STAGE, under which they may lie.
        sources = {STAGE_KUBECTL: os.open(kubectl, os.O_PATH | os.O_CLOEXEC)}
        writable: set[str] = set()
        try:
            if discovery_cache is not None and discovery_cache.is_dir():
                sources[STAGE_DISCOVERY] = os.open(discovery_cache, os.O_PATH | os.O_CLOEXEC)
            for name, bind in extra.items():
                target = f"{STAGE_EXTRA}/{name}"
                sources[target] = os.open(bind.source, os.O_PATH | os.O_CLOEXEC)
                if bind.writable:
                    writable.add(target)
            options = f"size={self.disk_bytes},mode=0755".encode()
            _check(
                _libc.mount(b"agentmatrix-agent", STAGE.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options),
                "cannot mount the agent's tmpfs",
            )
            os.mkdir(STAGE_HOME, 0o700)
            os.chown(STAGE_HOME, self.uid, self.uid)
            if extra:
                os.mkdir(STAGE_EXTRA, 0o755)
            for target, source in sources.items():
                if stat.S_ISDIR(os.fstat(source).st_mode):
                    os.mkdir(target, 0o755)
                else:
                    Path(target).touch(mode=0o755)
                source_path = f"/proc/self/fd/{source}".encode()
                _check(
                    _libc.mount(source_path, target.encode(), None, _MS_BIND, None), f"cannot bind {target}"
                )
                if target in writable:
                    continue
                flags = _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV
                _check(
                    _libc.mount(b"none", target.encode(), None, flags, None),
                    f"cannot make {target} read-only",
                )
            self.mnt_fd = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            self.home_fd = os.open(STAGE_HOME, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.has_discovery_cache = STAGE_DISCOVERY in sources
        finally:
            for source in sources.values():
                os.close(source)

    def write_home_file(self, relative: str, text: str, mode: int = 0o600) -> None:
        """Write a file into the agent's home (owned by the agent's user)."""
        directory = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=self.home_fd)
        try:
            *parents, name = relative.split("/")
            for part in parents:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=directory)
                os.chown(part, self.uid, self.uid, dir_fd=directory, follow_symlinks=False)
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
                os.close(directory)
                directory = inner
            handle = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode, dir_fd=directory
            )
            try:
                os.write(handle, text.encode())
                os.fchown(handle, self.uid, self.uid)
            finally:
                os.close(handle)
        finally:
            os.close(directory)

    def read_home_file(self, relative: str) -> str:
        """Read a file of the agent's home (as the runner, from outside the sandbox)."""
        with open(f"/proc/self/fd/{self.home_fd}/{relative}", errors="replace") as handle:
            return handle.read()

    def disk_free(self) -> int:
        """Bytes still free on the agent's tmpfs."""
        stats = os.fstatvfs(self.home_fd)
        return stats.f_bavail * stats.f_frsize

    def entry_argv(self) -> list[str]:
        """The prefix that runs a program in the trial's namespaces as its user: nsenter (util-linux),
        given the namespaces as inherited descriptors (`pass_fds`). Executed helpers, not a hook
        between fork and exec, keep the runner's spawn a vfork: forking a Python runner for each
        command cost tens of milliseconds."""
        return [
            find_nsenter(),
            f"--net=/proc/self/fd/{self.net_fd}",
            f"--mount=/proc/self/fd/{self.mnt_fd}",
            f"--setuid={self.uid}",
            f"--setgid={self.uid}",
            "--",
        ]

    @property
    def fds(self) -> tuple[int, int]:
        return (self.net_fd, self.mnt_fd)

    async def serve(self) -> None:
        """Start forwarding the namespace's connections to the API server (on the running loop)."""
        assert self._listener is not None
        upstream = (self.route.upstream_host, self.route.upstream_port)
        self._server = await asyncio.start_server(
            lambda reader, writer: self._relay(reader, writer, upstream), sock=self._listener
        )

    async def forward(self, port: int) -> None:
        """Let the namespace reach the host's 127.0.0.1:`port` at the same address inside."""
        listener: list[socket.socket] = []

        def listen() -> None:
            _check(_libc.setns(self.net_fd, CLONE_NEWNET), "cannot enter the trial's network namespace")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            sock.setblocking(False)
            listener.append(sock)

        _in_new_thread(listen)
        upstream = ("127.0.0.1", port)
        self._forwards.append(
            await asyncio.start_server(
                lambda reader, writer: self._relay(reader, writer, upstream), sock=listener[0]
            )
        )

    async def _relay(
        self,
        inside_reader: asyncio.StreamReader,
        inside_writer: asyncio.StreamWriter,
        upstream: tuple[str, int],
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._relays.add(task)
        try:
            outside_reader, outside_writer = await asyncio.open_connection(*upstream)
        except OSError:
            inside_writer.close()
            return
        try:
            await asyncio.gather(_pump(inside_reader, outside_writer), _pump(outside_reader, inside_writer))
        except asyncio.CancelledError:
            pass  # closed with the sandbox; a cancelled connection handler is not an error to log
        finally:
            for writer in (inside_writer, outside_writer):
                writer.close()
            if task is not None:
                self._relays.discard(task)

    async def aclose(self) -> None:
        for forward in self._forwards:
            forward.close()
        self._forwards.clear()
        if self._server is not None:
            self._server.close()
            for task in list(self._relays):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        self.close_descriptors()

    def close_descriptors(self) -> None:
        if self._listener is not None and self._server is None:
            self._listener.close()
        self._listener = None
        for name in ("net_fd", "mnt_fd", "home_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(_RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
