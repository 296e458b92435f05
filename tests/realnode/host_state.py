"""What a real node may change on the host, captured so that before-`up` and after-`down` compare."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from agentmatrix.cluster import hostchanges, node_layout

NODE_CGROUPS = (node_layout.CGROUP_ROOT, "kubepods", "k8s.io")
NODE_PROGRAMS = ("containerd", "containerd-shim", "containerd-shim-runc-v2", "kubelet", "runc")


def _iptables_rules(family: str) -> list[str]:
    out = subprocess.run([f"{family}-save"], capture_output=True, text=True, check=True).stdout
    # Counters and the save's own header/footer change on every call.
    return [line.split(" [", 1)[0] for line in out.splitlines() if line and not line.startswith("#")]


def _cgroups() -> list[str]:
    """Every hierarchy's top-level cgroups, and everything below those a node uses (the machine's
    own service manager makes and removes cgroups below its own all the time)."""
    found = []
    for hierarchy in hostchanges.cgroup_hierarchies():
        for top in sorted(hierarchy.iterdir()):
            if not top.is_dir():
                continue
            found.append(str(top))
            if top.name in NODE_CGROUPS:
                found += sorted(str(Path(dirpath)) for dirpath, _dirs, _files in os.walk(top))
    return found


def _sysctls() -> dict[str, str]:
    keys = list(hostchanges.SYSCTLS)
    keys += [f"net.ipv4.conf.{name}.route_localnet" for name in os.listdir("/proc/sys/net/ipv4/conf")]
    return hostchanges.read_sysctls(tuple(keys))


def _node_processes() -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if name.startswith(NODE_PROGRAMS):
            found.append(f"{pid} {name}")
    return found


def snapshot() -> dict[str, object]:
    return {
        "sysctls": _sysctls(),
        "iptables": _iptables_rules("iptables"),
        "ip6tables": _iptables_rules("ip6tables"),
        "interfaces": sorted(os.listdir("/sys/class/net")),
        "mounts": sorted(hostchanges.mount_points()),
        "cgroups": _cgroups(),
        "fixed paths": [p for p in hostchanges.FIXED_PATHS if os.path.lexists(p)],
        "network namespaces": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
        "node processes": _node_processes(),
    }


def differences(before: dict[str, object], after: dict[str, object]) -> dict[str, tuple[object, object]]:
    return {key: (before[key], after[key]) for key in before if before[key] != after[key]}
