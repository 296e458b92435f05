"""Whether the trial's namespaces and bubblewrap work on this host: checked once by a runner host,
so that the runners forked from it skip their own check."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from agentmatrix.agent_runner import bubblewrap
from agentmatrix.agent_runner.command_sandbox import SandboxUnavailable
from agentmatrix.agent_runner.isolation import IsolationError, TrialSpace, api_route
from agentmatrix.agent_runner.limits import LimitMeter, Limits

BUBBLEWRAP_UNABLE = "bubblewrap cannot create the sandbox on this host"
ISOLATION_UNABLE = "the trial's namespaces cannot be made on this host"
_host_verified = False


def host_verified() -> bool:
    """Whether `verify_host` succeeded in this process (or the one it was forked from)."""
    return _host_verified


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
            [*space.entry_argv(), bubblewrap.find_bwrap(), *bubblewrap.isolation_args(1 << 20),
             *bubblewrap.READ_ONLY_ROOT, *bubblewrap.limited_shell(meter, "true")],
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
