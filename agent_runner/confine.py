"""The sandbox a run's commands go to, by its confinement (`config.Confinement`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agentmatrix.agent_runner.command_sandbox import CommandSandbox, SandboxUnavailable
from agentmatrix.agent_runner.config import Confinement
from agentmatrix.agent_runner.limits import Limits
from agentmatrix.agent_runner.pod_sandbox import PodSandbox
from agentmatrix.agent_runner.sandbox import Sandbox


def make_sandbox(
    confinement: Confinement,
    scratch_dir: Path,
    kubeconfig: Path,
    namespace: str,
    *,
    kubectl: str,
    limits: Limits,
    discovery_cache: Path | None = None,
    read_only_paths: Sequence[Path] = (),
    pod: str | None = None,
) -> CommandSandbox:
    """Raises SandboxUnavailable when this confinement cannot work as asked."""
    if confinement is Confinement.POD:
        if pod is None:
            raise SandboxUnavailable("--confinement pod needs --pod, the agent's shell Pod")
        if read_only_paths:
            raise SandboxUnavailable("read-only host paths cannot be shown in a shell Pod")
        return PodSandbox(scratch_dir, kubeconfig, namespace, pod, limits)
    return Sandbox(
        scratch_dir,
        kubeconfig,
        namespace,
        kubectl,
        discovery_cache=discovery_cache,
        limits=limits,
        read_only_paths=read_only_paths,
    )
