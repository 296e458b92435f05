"""The bubblewrap command line a confined command runs under: its namespaces, the read-only root it
builds, the environment's PATH, and the shell that applies the trial's limits."""

from __future__ import annotations

import os
import shutil

from agentmatrix.agent_runner.command_sandbox import SandboxUnavailable
from agentmatrix.agent_runner.limits import LimitMeter

SANDBOX_BIN = "/opt/agent/bin"
SANDBOX_PATH = f"{SANDBOX_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
ETC_FILES = (
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
# kubectl is a Go program that lives for one command: collecting its garbage less often saves about
# a quarter of its CPU.
KUBECTL_GOGC = "400"
READ_ONLY_ROOT = ["--remount-ro", "/dev", "--remount-ro", "/"]
LIMITS_UNSET_EXIT = 125


def find_bwrap() -> str:
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(
            "bubblewrap (`bwrap`) is not installed, so the agent's commands cannot be confined; "
            "install the Debian package `bubblewrap` (apt-get install bubblewrap). "
            "Commands are never run unconfined."
        )
    return found


def _usr_merged_links() -> list[str]:
    """Bind or link /bin, /lib*, /sbin the way the host has them (links into /usr or real dirs)."""
    args: list[str] = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def isolation_args(tmp_bytes: int) -> list[str]:
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


def limited_shell(meter: LimitMeter, command: str) -> list[str]:
    """`/bin/sh -c COMMAND` under the trial's resource limits (set by a shell that then becomes the
    command's: the command is its sandbox's init, see `isolation_args`)."""
    wrapper = f'{meter.shell_prefix()} || exit {LIMITS_UNSET_EXIT}; exec /bin/sh -c "$1"'
    return ["/bin/sh", "-c", wrapper, "sh", command]
