"""The `pod` driver: the agent's shell is a Pod of the sandbox; the runner stays a process here.

- **The shell Pod** (`names.SHELL_POD`): `--driver-image` (the agent-runner image) idling as its
  init, as the sandbox's `agent` ServiceAccount through a projected token (automount off; the
  token, the cluster's CA and the namespace where in-cluster kubectl looks, the token expiring
  after the trial), Pod Security `restricted` (a non-root user of the trial's own, all
  capabilities dropped, RuntimeDefault seccomp, no privilege escalation, a read-only root), the
  driver's resource limits, a memory-backed home of the runner's disk size and `/tmp`, on the
  real node when the cluster has one. No other secret: the sandbox holds no Secret at all.
- **The runner** is forked by the operator's warm runner host exactly as with the process driver
  (same transcript, result, end reasons, usage and limits), with `--confinement pod`: each
  command runs in the shell Pod through `pods/exec` (`agent_runner.pod_sandbox`). It execs as
  the ServiceAccount `names.SHELL_EXEC_SERVICE_ACCOUNT`, bound to a ClusterRole that allows `get`
  on that Pod and exec into it, nothing else; its token is minted here, expires after the trial,
  and never enters the Pod. The model endpoint and its key stay with the runner.
- **The Pod's end ends the trial:** a shell Pod that is deleted, evicted, OOM-killed or fails, or
  stays Pending or unable to start (`ImagePullBackOff`, `CreateContainerConfigError`, ...) past
  a bound, stops the runner, and the trial ends with that reason (`shell_failure`).
- **Restart:** `describe()` is the runner's process record plus the Pod's name; an operator that
  restarts stops the runner by it (`process.stop_orphan`) and deletes the sandbox, Pod included.

`spec.agent.image` runs the agent's own image as the Pod `agent-driver` instead (no runner: its
log and exit code are the result), with the same projected token and placement.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentmatrix.api import names
from agentmatrix.api.replicationeval import AgentSpec
from agentmatrix.kube import ApiError, Kube
from agentmatrix.operator import sandbox_lifecycle
from agentmatrix.operator.drivers.agent_image import RunningAgentImage, start_agent_image
from agentmatrix.operator.drivers.base import Launch, runner_arguments, write_inputs
from agentmatrix.operator.drivers.pod_objects import ensure_shell_exec_role, exec_access_objects, shell_pod
from agentmatrix.operator.drivers.process import RunnerHost, RunningProcess, spawn_runner
from agentmatrix.operator.drivers.shell_failure import ShellFailure, shell_failure

if TYPE_CHECKING:
    from agentmatrix.operator.services import Services

TOKEN_MARGIN_SECONDS = 600
WATCH_SECONDS = 1.0


@dataclass
class PodDriver:
    """Each trial's commands in a shell Pod of its sandbox; the runner a process here."""

    kube: Kube
    image: str
    host: RunnerHost
    real_node: Callable[[], Awaitable[bool]]
    pods_in_sandbox: int = 1
    needs_agent_kubeconfig: bool = False

    @classmethod
    def for_operator(cls, services: Services) -> PodDriver:
        if not services.settings.driver_image:
            raise RuntimeError("the pod driver needs --driver-image (the agent-runner image)")
        return cls(
            services.kube, services.settings.driver_image, services.runner_host, services.has_real_node
        )

    async def prepare(self, namespace: str, workdir: Path, api_key: str | None) -> PreparedShell:
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        await self.host.warm()
        return PreparedShell(self, namespace, api_key)


@dataclass
class PreparedShell:
    driver: PodDriver
    namespace: str
    api_key: str | None
    shell_made: bool = False

    async def discard(self) -> None:
        return None

    async def sandbox_made(self, time_limit: float, agent: AgentSpec | None) -> None:
        """The shell Pod starts while the trial waits for the agent's workload (a Pod takes
        seconds to run on a busy node), so that the agent's first command need not wait for it."""
        if agent is None or agent.image is None:
            await self._make_shell(time_limit)

    async def _make_shell(self, time_limit: float) -> None:
        if self.shell_made:
            return
        kube, ns = self.driver.kube, self.namespace
        pod = shell_pod(ns, self.driver.image, time_limit, await self.driver.real_node())
        await ensure_shell_exec_role(kube)
        await sandbox_lifecycle.create_objects(
            kube, exec_access_objects(ns), kube.create_or_keep(f"/api/v1/namespaces/{ns}/pods", pod)
        )
        self.shell_made = True

    async def start(self, launch: Launch) -> RunningShell | RunningAgentImage:
        kube, ns = self.driver.kube, launch.namespace
        if launch.agent is not None and launch.agent.image is not None:
            return await start_agent_image(kube, launch, launch.agent.image, await self.driver.real_node())
        # Made already by `sandbox_made` in a trial.
        await asyncio.gather(self._make_shell(launch.time_limit), asyncio.to_thread(write_inputs, launch))
        account, lifetime = names.SHELL_EXEC_SERVICE_ACCOUNT, int(launch.time_limit) + TOKEN_MARGIN_SECONDS
        token = await sandbox_lifecycle.mint_token(kube, ns, account, lifetime)
        kubeconfig = await asyncio.to_thread(
            sandbox_lifecycle.write_kubeconfig,
            launch.workdir / "exec-kubeconfig",
            kube.access.server,
            kube.access.ca_data,
            token,
            ns,
            names.SHELL_EXEC_SERVICE_ACCOUNT,
        )
        runner_launch = dataclasses.replace(launch, kubeconfig=kubeconfig)
        arguments = runner_arguments(runner_launch, kubectl=None)
        arguments += ["--confinement", "pod", "--pod", names.SHELL_POD]
        process = await spawn_runner(self.driver.host, runner_launch, arguments, self.api_key)
        return RunningShell(kube, ns, process)


class RunningShell:
    """The runner's process and the shell Pod it works in: whichever ends first ends the run."""

    def __init__(self, kube: Kube, namespace: str, process: RunningProcess) -> None:
        self.kube = kube
        self.namespace = namespace
        self.process = process
        self.failure: ShellFailure | None = None
        self._started = asyncio.get_running_loop().time()

    @property
    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{names.SHELL_POD}"

    def describe(self) -> dict[str, Any]:
        return {**self.process.describe(), "shellPod": names.SHELL_POD}

    async def _look(self) -> ShellFailure | None:
        try:
            pod = await self.kube.get(self._path)
        except ApiError:
            return None  # the API server's trouble is not the Pod's
        return shell_failure(pod, asyncio.get_running_loop().time() - self._started)

    async def _watch(self) -> ShellFailure:
        while True:
            failure = await self._look()
            if failure is not None:
                return failure
            await asyncio.sleep(WATCH_SECONDS)

    async def wait(self) -> int | None:
        runner = asyncio.ensure_future(self.process.wait())
        watch = asyncio.ensure_future(self._watch())
        try:
            done, _ = await asyncio.wait({runner, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if runner not in done:
            self.failure = watch.result()
            await self.process.stop()
        return await runner

    async def stop(self) -> None:
        """The runner; the Pod goes with the sandbox (and stays with it under --keep-sandboxes)."""
        await self.process.stop()

    async def collect(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        transcript, result = await self.process.collect()
        if self.failure is None and (result is None or result.get("end_reason") == "sandbox_unavailable"):
            self.failure = await self._look()  # the Pod's own reason says more than the runner's
        if self.failure is not None:
            result = {**(result or {}), "end_reason": self.failure.reason, "message": self.failure.message}
        return transcript, result
