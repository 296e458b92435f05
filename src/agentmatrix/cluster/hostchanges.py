"""Record what a real node changes on the host, and undo exactly that.

A kubelet, containerd and the CNI plugins change the machine they run on: kernel settings,
iptables chains, cgroups, mounts, network interfaces and namespaces, and directories at fixed
paths. `begin` writes down the host's state before the node starts; `undo` puts back what
differs, touching only what did not exist before and carries a name the node uses (it never
flushes a table or a chain it did not create).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Kernel settings the kubelet (overcommit, panic), the CNI bridge plugin (forwarding) and
# containerd may change; each is put back to the value recorded before the node started.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)

# Directories that containerd, the kubelet and CNI write whatever their configuration says.
FIXED_PATHS = (
    "/run/containerd",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/var/log/pods",
    "/var/log/containers",
    "/opt/containerd",
    "/etc/cni",
    "/run/netns",
)

# iptables chains a node may create: its own, and the kubelet's canaries and hints.
CHAIN_PREFIXES = ("AGENTMATRIX-NODE-", "KUBE-")
IPTABLES = ("iptables", "ip6tables")
BUILTIN_CHAINS = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

CGROUP_MOUNTS = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")


@dataclass
class Journal:
    """The host before the node started, and what the node made (saved as JSON)."""

    path: Path
    sysctls: dict[str, str] = field(default_factory=dict)
    absent_paths: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    chains: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    cgroups: dict[str, list[str]] = field(default_factory=dict)
    cgroup_root: str = ""
    interfaces: list[str] = field(default_factory=list)
    mount_roots: list[str] = field(default_factory=list)

    def save(self) -> None:
        data = asdict(self)
        data["path"] = str(self.path)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["path"] = path
        return cls(**data)

    def add_interface(self, name: str) -> None:
        self.interfaces.append(name)
        self.save()


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctls(keys: tuple[str, ...] = SYSCTLS) -> dict[str, str]:
    values = {}
    for key in keys:
        with contextlib.suppress(OSError):
            values[key] = _sysctl_path(key).read_text().strip()
    return values


def set_sysctl(key: str, value: str) -> None:
    _sysctl_path(key).write_text(value)


def iptables(family: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([family, "-w", "5", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{family} {' '.join(args)} failed: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class Table:
    chains: list[str]  # every chain, built-in ones included
    rules: list[list[str]]  # `-A CHAIN ...` as arguments


def iptables_tables(family: str) -> dict[str, Table]:
    """The tables that exist, read with `iptables-save` (listing with `iptables -S` would create
    a missing table on an nf_tables host)."""
    result = subprocess.run([f"{family}-save"], capture_output=True, text=True)
    tables: dict[str, Table] = {}
    current: Table | None = None
    for line in result.stdout.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], Table([], []))
        elif current is not None and line.startswith(":"):
            current.chains.append(line[1:].split()[0])
        elif current is not None and line.startswith("-A "):
            current.rules.append(line.split())
    return tables


def all_chains() -> dict[str, dict[str, list[str]]]:
    return {
        family: {name: table.chains for name, table in iptables_tables(family).items()} for family in IPTABLES
    }


def _nft_family(family: str) -> str:
    return "ip6" if family == "ip6tables" else "ip"


def cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, named ones and the unified one)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] in ("cgroup", "cgroup2"):
            found.append(Path(parts[1]))
    return found


def _top_cgroups() -> dict[str, list[str]]:
    return {
        str(h): sorted(entry.name for entry in h.iterdir() if entry.is_dir()) for h in cgroup_hierarchies()
    }


def mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        points.append(point)
    return points


def _netns() -> list[str]:
    return sorted(entry.name for entry in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []


def begin(path: Path, cgroup_root: str, mount_roots: list[Path]) -> Journal:
    """Record the host as it is now, before anything of the node exists."""
    journal = Journal(
        path=path,
        sysctls=read_sysctls(),
        absent_paths=[p for p in FIXED_PATHS if not os.path.lexists(p)],
        netns=_netns(),
        chains=all_chains(),
        cgroups=_top_cgroups(),
        cgroup_root=cgroup_root,
        mount_roots=[str(p) for p in mount_roots],
    )
    journal.save()
    return journal


def make_cgroup_root(name: str) -> None:
    """Create /NAME in every hierarchy; cpuset needs its CPUs and memory nodes before any task joins."""
    for hierarchy in cgroup_hierarchies():
        directory = hierarchy / name
        directory.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (directory / knob).exists() and not (directory / knob).read_text().strip():
                (directory / knob).write_text((hierarchy / knob).read_text())


def join_cgroup(name: str, pid: int) -> None:
    for hierarchy in cgroup_hierarchies():
        procs = hierarchy / name / "cgroup.procs"
        if procs.exists():
            with contextlib.suppress(OSError):  # a hierarchy may refuse (e.g. a threaded one)
                procs.write_text(str(pid))


def _pids_under(directory: Path) -> set[int]:
    pids: set[int] = set()
    if not directory.is_dir():
        return pids
    for dirpath, _dirs, _files in os.walk(directory):
        with contextlib.suppress(OSError):
            text = (Path(dirpath) / "cgroup.procs").read_text()
            pids.update(int(pid) for pid in text.split())
    return pids


def kill_cgroup(name: str, timeout: float = 15.0) -> None:
    """SIGKILL every process in /NAME (any hierarchy) until none is left: containers, shims,
    and whatever they forked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = set().union(*(_pids_under(h / name) for h in cgroup_hierarchies()))
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    raise RuntimeError(f"processes in cgroup /{name} survived SIGKILL for {timeout:.0f}s")


def _remove_cgroup_tree(directory: Path) -> None:
    """rmdir depth first (cgroup directories hold only kernel files, which rmdir takes along)."""
    if not directory.is_dir():
        return
    for child in directory.iterdir():
        if child.is_dir():
            _remove_cgroup_tree(child)
    for _ in range(50):
        try:
            directory.rmdir()
            return
        except OSError:
            time.sleep(0.1)  # a cgroup empties a moment after its last process died
    directory.rmdir()


def _unmount_under(roots: list[str]) -> None:
    """Unmount every mount at or below `roots`, deepest first."""
    for _ in range(5):
        inside = [
            p for p in mount_points() if any(p == r or p.startswith(r.rstrip("/") + "/") for r in roots)
        ]
        if not inside:
            return
        for point in sorted(set(inside), key=lambda p: p.count("/"), reverse=True):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)


def _delete_new_chains(journal: Journal) -> None:
    """Delete the chains (and rules jumping to them) that the node made; then the tables it
    made, if nothing else has put a rule in them since."""
    for family in IPTABLES:
        before = journal.chains.get(family, {})
        for name, table in iptables_tables(family).items():
            known = set(before.get(name, []))
            new = [c for c in table.chains if c not in known and c.startswith(CHAIN_PREFIXES)]
            for rule in table.rules:
                jumps_to_new = any(
                    rule[i - 1] in ("-j", "-g") and rule[i] in new for i in range(1, len(rule))
                )
                if rule[1] not in new and jumps_to_new:
                    iptables(family, "-t", name, "-D", *rule[1:], check=False)
            for chain in new:
                iptables(family, "-t", name, "-F", chain, check=False)
            for chain in new:
                iptables(family, "-t", name, "-X", chain, check=False)
        if shutil.which("nft") is None:
            continue
        for name, table in iptables_tables(family).items():
            builtin_only = set(table.chains) <= BUILTIN_CHAINS
            if name not in before and not table.rules and builtin_only:
                subprocess.run(["nft", "delete", "table", _nft_family(family), name], capture_output=True)


def undo(journal: Journal, leftovers: list[str] | None = None) -> list[str]:
    """Put the host back as `journal` recorded it. Returns what could not be undone."""
    problems = leftovers if leftovers is not None else []
    if journal.cgroup_root:
        try:
            kill_cgroup(journal.cgroup_root)
        except RuntimeError as exc:
            problems.append(str(exc))
    new_netns = [name for name in _netns() if name not in journal.netns]
    netns_paths = [str(NETNS_DIR / name) for name in new_netns]
    created = [p for p in journal.absent_paths if os.path.lexists(p)]
    _unmount_under([*journal.mount_roots, *netns_paths, *created])
    for path in netns_paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
    for hierarchy in cgroup_hierarchies():
        before = set(journal.cgroups.get(str(hierarchy), []))
        for name in {journal.cgroup_root, "kubepods", "k8s.io"} - {""}:
            if name not in before:
                try:
                    _remove_cgroup_tree(hierarchy / name)
                except OSError as exc:
                    problems.append(f"cgroup {hierarchy / name}: {exc}")
    _delete_new_chains(journal)
    for name in journal.interfaces:
        if Path("/sys/class/net", name).exists():
            subprocess.run(["ip", "link", "delete", name], capture_output=True)
    for key, value in journal.sysctls.items():
        try:
            if _sysctl_path(key).read_text().strip() != value:
                set_sysctl(key, value)
        except OSError as exc:
            problems.append(f"sysctl {key}: {exc}")
    for path in created:
        if any(p.startswith(path.rstrip("/") + "/") or p == path for p in mount_points()):
            problems.append(f"{path} still has a mount below it; left in place")
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return problems
