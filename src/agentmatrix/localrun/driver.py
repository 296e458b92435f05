"""Which driver `agentmatrix run` uses, and what the pod driver needs on the local cluster.

`--driver`, else the eval's `spec.driver`, else auto: pod where a real node can run the agent
runner's image (`cluster up --real-node`, its images built first and cached), otherwise process,
saying in one line why and what would change that.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from agentmatrix.api import names
from agentmatrix.cluster import binaries, images, node_layout, oci, realnode, state_layout
from agentmatrix.localrun.errors import RunError

RunDriver = Literal["auto", "process", "pod"]
RUN_DRIVERS: tuple[RunDriver, ...] = ("auto", "process", "pod")
Driver = Literal["process", "pod"]
KubectlRun = Callable[..., subprocess.CompletedProcess[str]]


def choose(
    evaluation: Mapping[str, Any],
    wanted: RunDriver,
    eval_file: Path,
    pod_unavailable: Callable[[], str | None],
    console: Console,
) -> Driver:
    """`wanted` (`--driver`), else the eval's `spec.driver`, else auto: pod where it can work. A
    fallback to process mode is said in one plain line with its reason; a pod driver that cannot
    work is refused with it."""
    spec = evaluation.get("spec") or {}
    asked = spec.get("driver")
    if asked and wanted != "auto" and asked != wanted:
        raise RunError(
            f"{eval_file} sets spec.driver: {asked}, but --driver is {wanted}: leave one of them out"
        )
    wanted = asked or wanted
    if wanted == "process":
        return "process"
    command = (spec.get("agent") or {}).get("command")
    reason = (
        "spec.agent.command runs beside the runner on this machine, out of a shell Pod's reach"
        if command
        else pod_unavailable()
    )
    if reason is None:
        return "pod"
    if wanted == "pod":
        raise RunError(f"the pod driver cannot run here: {reason}")
    console.print(
        f"falling back to process mode (agents run as confined local processes, not pods): {reason}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return "process"


def pod_unavailable(kubeconfig: Path | None, kubectl_run: KubectlRun) -> str | None:
    """Why agent pods cannot run (None: they can). Locally: what a real node and its images
    need; on a given cluster (`kubeconfig`): a node that runs this project's images (a real node)."""
    if kubeconfig is not None:
        real = kubectl_run(
            "get", "nodes", "-l", f"{names.LABEL_NODE_KIND}={names.NODE_KIND_REAL}", "-o", "name"
        )
        if real.stdout.strip():
            return None
        return (
            f"the cluster of {kubeconfig} has no real node to run the agent-runner image "
            "(start the local one with `agentmatrix cluster up --real-node`)"
        )
    state = state_layout.default_state_dir()
    node = realnode.unavailable(state)
    if node is not None:
        return node
    return images.missing_inputs() if images.outdated() else None


def ensure_images(state: Path, say: Callable[[str], None]) -> None:
    """The images a real node runs, built (or rebuilt after the checkout changed) and cached;
    loaded into the real node if it already runs."""
    outdated = images.outdated()
    if not outdated:
        return
    say(
        f"building the images ({', '.join(outdated)} missing or older than this checkout); "
        "`agentmatrix image build` caches them, a few minutes the first time"
    )
    try:
        built = images.build_all(say, binaries.find().kubectl)
        if realnode.running(state):
            ctr = node_layout.ctr_command(state)
            for image in built:
                oci.load(ctr, image.archive)
    except (oci.ImageError, binaries.BuildError) as exc:
        raise RunError(f"the images could not be built: {exc}") from exc
