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
import math
import socket
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlsplit

from agentmatrix.api import names
from agentmatrix.api.replicationeval import AgentSpec
from agentmatrix.kube import ApiError, Kube
from agentmatrix.operator import sandbox
from agentmatrix.operator.drivers.base import Launch, runner_arguments, write_inputs
from agentmatrix.operator.drivers.process import RunnerHost, RunningProcess, spawn_runner
from agentmatrix.operator.sandbox import (
    restricted_container_security_context,
    restricted_pod_security_context,
)

if TYPE_CHECKING:
    from agentmatrix.operator.services import Services

AGENT_IMAGE_POD = "agent-driver"
# The agent's share of the node. The shell writes nothing to the node's disk (its root is read-only,
# its home and /tmp are in memory, counted here), so it asks for no ephemeral storage.
SHELL_LIMITS = {"cpu": "1", "memory": "2Gi"}
# An idle shell that runs one short command at a time: it asks for little CPU and memory, so that
# shell Pods do not crowd the agent's own replicas off the node (at 100m, five trials' shells and
# their replicas no longer fit one real node's CPU, and replicas stayed Pending; at 256Mi, the
# shells of ten trials starting and ending on a 2Gi node did not fit its memory). Idle, the shell
# holds a few MiB; a command's own peak is bounded by the limit and the trial's memory limit.
SHELL_REQUESTS = {"cpu": "20m", "memory": "64Mi"}
AGENT_IMAGE_LIMITS = {**SHELL_LIMITS, "ephemeral-storage": "1Gi"}
AGENT_IMAGE_REQUESTS = {"cpu": "100m", "memory": "256Mi"}  # an agent at work, not an idle shell
HOME_SIZE = "256Mi"  # the runner's default disk limit (agent_runner.limits.Limits.disk_bytes)
TMP_SIZE = "64Mi"  # as process mode's /tmp
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
UID_BASE = 0x60000000  # the shell's user: one per trial, so its process limit counts that trial only
TOKEN_MARGIN_SECONDS = 600
PENDING_LIMIT_SECONDS = 120.0  # a shell Pod not running by then ends the trial
WATCH_SECONDS = 1.0
# The shell's init: idles, reaps what is re-parented to it; SIGTERM is ignored (it is the Pod's
# init), so the agent cannot end it, and the kubelet kills it at the grace period's end.
SHELL_INIT = (
    "import os, time\n"
    "print('agentmatrix shell: commands arrive by exec', flush=True)\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        time.sleep(1)\n"
)
# Why the shell Pod ended a run, in the runner's words (operator.trial.RUNNER_END_REASONS).
ShellFailureReason = Literal[
    "pod_deleted", "pod_evicted", "pod_oom_killed", "pod_failed", "pod_image_unavailable",
    "pod_start_failed", "pod_pending",
]  # fmt: skip
SHELL_FAILURE_REASONS: frozenset[str] = frozenset(get_args(ShellFailureReason))
# Waiting reasons of a container that will not start by itself, and the trial's end reason.
STUCK_REASONS: Mapping[str, ShellFailureReason] = {
    "ErrImagePull": "pod_image_unavailable",
    "ImagePullBackOff": "pod_image_unavailable",
    "InvalidImageName": "pod_image_unavailable",
    "CreateContainerConfigError": "pod_start_failed",
    "CreateContainerError": "pod_start_failed",
    "RunContainerError": "pod_start_failed",
}


def shell_uid(namespace: str) -> int:
    return UID_BASE + zlib.crc32(namespace.encode()) % 0x1000000


def token_seconds(time_limit: float) -> int:
    """The projected token's lifetime: the kubelet renews a token at 80% of it, so this outlasts the
    trial, and the token the runner learnt (to redact it) stays the one the agent holds."""
    return max(600, math.ceil(time_limit / 0.8) + 60)


def api_access_volume(time_limit: float) -> dict[str, Any]:
    """The `agent` ServiceAccount's token, the cluster's CA and the namespace, as in-cluster
    clients expect them (mounted at SERVICE_ACCOUNT_DIR)."""
    return {
        "name": "kube-api-access",
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": token_seconds(time_limit)}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
        },
    }


def driver_pod(
    namespace: str, name: str, spec: dict[str, Any], time_limit: float, real_node: bool
) -> dict[str, Any]:
    """A Pod acting as the sandbox's `agent` ServiceAccount through its projected token only, run
    once, Pod Security `restricted`, on the real node when there is one. Its container mounts the
    token at SERVICE_ACCOUNT_DIR."""
    pod_spec: dict[str, Any] = {
        "serviceAccountName": names.AGENT_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        **spec,
    }
    pod_spec["volumes"] = [api_access_volume(time_limit), *spec.get("volumes", [])]
    for container in pod_spec["containers"]:
        container.setdefault("volumeMounts", []).insert(
            0, {"name": "kube-api-access", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}
        )
        container.setdefault("resources", {"limits": SHELL_LIMITS, "requests": SHELL_REQUESTS})
    if real_node:
        pod_spec.update(sandbox.real_node_placement())
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": name}},
        "spec": pod_spec,
    }


def shell_pod(namespace: str, image: str, time_limit: float, real_node: bool) -> dict[str, Any]:
    """The agent's shell: `image` idling, commands arriving by exec."""
    uid = shell_uid(namespace)
    container = {
        "name": names.SHELL_CONTAINER,
        "image": image,
        "command": ["python3", "-IS", "-c", SHELL_INIT],
        "workingDir": names.SHELL_HOME,
        "env": [{"name": "HOME", "value": names.SHELL_HOME}],
        "securityContext": {**restricted_container_security_context(), "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "home", "mountPath": names.SHELL_HOME},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    spec = {
        "securityContext": {**restricted_pod_security_context(), "runAsUser": uid, "runAsGroup": uid},
        "containers": [container],
        "volumes": [
            {"name": "home", "emptyDir": {"medium": "Memory", "sizeLimit": HOME_SIZE}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": TMP_SIZE}},
        ],
    }
    return driver_pod(namespace, names.SHELL_POD, spec, time_limit, real_node)


def shell_exec_cluster_role() -> dict[str, Any]:
    """The runner's exec identity: `get` on the shell Pod and exec into it, nothing else. An exec
    over a websocket is a GET, which the API server authorizes as `get` on `pods/exec` unless its
    `AuthorizePodWebsocketUpgradeCreatePermission` gate is on (then `create`): both are granted.
    A ClusterRole bound in each sandbox, so that the operator needs only `bind` on it, not the
    right to exec itself (deploy/ installs it; the operator makes it where it may, locally)."""
    only = {"apiGroups": [""], "resourceNames": [names.SHELL_POD]}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": names.SHELL_EXEC_CLUSTER_ROLE},
        "rules": [
            {**only, "resources": ["pods"], "verbs": ["get"]},
            {**only, "resources": ["pods/exec"], "verbs": ["get", "create"]},
        ],
    }


def exec_access_objects(namespace: str) -> list[dict[str, Any]]:
    """The runner's ServiceAccount in the sandbox, bound to `shell_exec_cluster_role` there."""
    account = names.SHELL_EXEC_SERVICE_ACCOUNT
    binding = sandbox.role_binding(namespace, names.SHELL_EXEC_CLUSTER_ROLE, account, "ClusterRole")
    return [sandbox.service_account(namespace, account), binding]


async def ensure_shell_exec_role(kube: Kube) -> None:
    """The ClusterRole the sandboxes bind, made if it is missing (an install ships it)."""
    roles = "/apis/rbac.authorization.k8s.io/v1/clusterroles"
    if await kube.get(f"{roles}/{names.SHELL_EXEC_CLUSTER_ROLE}") is None:
        await kube.create_or_keep(roles, shell_exec_cluster_role())


@dataclass(frozen=True)
class ShellFailure:
    reason: ShellFailureReason  # in the runner's words (operator.trial.RUNNER_END_REASONS)
    message: str


def shell_failure(pod: Mapping[str, Any] | None, seconds_pending: float) -> ShellFailure | None:
    """Why the shell Pod can no longer run the agent's commands (None while it can, or may soon)."""
    if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return ShellFailure("pod_deleted", f"the shell Pod {names.SHELL_POD} was deleted")
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return ShellFailure("pod_evicted", f"the shell Pod was evicted: {status.get('message', '')}".strip())
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        terminated = state.get("terminated") or {}
        if terminated.get("reason") == "OOMKilled":
            return ShellFailure(
                "pod_oom_killed", "the shell Pod's container was OOM-killed (its memory limit)"
            )
        if terminated:
            why = terminated.get("reason") or f"exit code {terminated.get('exitCode')}"
            return ShellFailure("pod_failed", f"the shell Pod's container ended: {why}")
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return ShellFailure(
                STUCK_REASONS[waiting["reason"]],
                f"the shell Pod cannot start: {waiting['reason']}: {waiting.get('message', '')}".strip(),
            )
    if status.get("phase") in ("Failed", "Succeeded"):
        return ShellFailure(
            "pod_failed", f"the shell Pod ended ({status.get('reason') or status.get('phase')})"
        )
    if status.get("phase", "Pending") == "Pending" and seconds_pending > PENDING_LIMIT_SECONDS:
        why = "; ".join(
            f"{c.get('reason')}: {c.get('message')}"
            for c in status.get("conditions") or []
            if c.get("status") == "False"
        )
        return ShellFailure(
            "pod_pending",
            f"the shell Pod was still Pending after {PENDING_LIMIT_SECONDS:.0f} s ({why or 'no reason'})",
        )
    return None


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
        await sandbox.create_objects(
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
        token = await sandbox.mint_token(kube, ns, account, lifetime)
        kubeconfig = await asyncio.to_thread(
            sandbox.write_kubeconfig,
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


# --- an agent's own image ---------------------------------------------------------------------
async def start_agent_image(kube: Kube, launch: Launch, image: str, real_node: bool) -> RunningAgentImage:
    """The agent's own image as the Pod `agent-driver`, as the `agent` ServiceAccount, with the
    prompt in /inputs/prompt.txt, the in-cluster configuration for its projected token (the
    kubelet's KUBERNETES_SERVICE_HOST/PORT: no cluster DNS needed) and the model as
    OPENAI_BASE_URL / OPENAI_API_KEY (from a Secret of the sandbox: the agent's own model access).
    No runner runs in it, so there is no recorded kubectl and no step limit: the trial's time limit
    stops it, and the API server measures what it did."""
    ns = launch.namespace
    prompt = f"{launch.system_prompt}\n\n{launch.task}\n"
    inputs = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{AGENT_IMAGE_POD}-inputs", "namespace": ns},
        "data": {"prompt.txt": prompt, "task.txt": launch.task},
    }
    await kube.create_or_keep(f"/api/v1/namespaces/{ns}/configmaps", inputs)
    env: list[dict[str, Any]] = [
        {"name": "AGENTMATRIX_PROMPT_FILE", "value": "/inputs/prompt.txt"},
        {"name": "AGENTMATRIX_NAMESPACE", "value": ns},
        {"name": "OPENAI_MODEL", "value": launch.model_name or ""},
    ]
    if launch.base_url is not None:
        env += [{"name": "OPENAI_BASE_URL", "value": launch.base_url},
                {"name": "OPENAI_API_BASE", "value": launch.base_url}]  # fmt: skip
    if launch.api_key is not None:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{AGENT_IMAGE_POD}-model", "namespace": ns},
            "stringData": {"apiKey": launch.api_key},
        }
        await kube.create_or_keep(f"/api/v1/namespaces/{ns}/secrets", secret)
        env.append(
            {
                "name": "OPENAI_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": f"{AGENT_IMAGE_POD}-model", "key": "apiKey"}},
            }
        )
    spec = {
        "activeDeadlineSeconds": max(1, int(launch.time_limit)),
        "securityContext": restricted_pod_security_context(),
        "containers": [
            {
                "name": "agent",
                "image": image,
                "env": env,
                "securityContext": restricted_container_security_context(),
                "resources": {"limits": AGENT_IMAGE_LIMITS, "requests": AGENT_IMAGE_REQUESTS},
                "volumeMounts": [{"name": "inputs", "mountPath": "/inputs"}],
            }
        ],
        "volumes": [{"name": "inputs", "configMap": {"name": f"{AGENT_IMAGE_POD}-inputs"}}],
    }
    pod = driver_pod(ns, AGENT_IMAGE_POD, spec, launch.time_limit, real_node)
    if launch.base_url is not None:
        policy = await asyncio.to_thread(model_network_policy, ns, launch.base_url)
        await kube.create_or_keep(f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies", policy)
    await kube.create_or_keep(f"/api/v1/namespaces/{ns}/pods", pod)
    return RunningAgentImage(kube, ns)


def model_network_policy(namespace: str, base_url: str) -> dict[str, Any]:
    """Egress from an agent image's Pod to the model endpoint's addresses (resolved here, as the
    NetworkPolicy API names no hosts); the sandbox's own policy allows the API server only."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = sorted(
        {str(info[4][0]) for info in socket.getaddrinfo(parts.hostname or "", port, proto=socket.IPPROTO_TCP)}
    )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{AGENT_IMAGE_POD}-model", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": AGENT_IMAGE_POD}},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": f"{ip}/{128 if ':' in ip else 32}"}} for ip in addresses],
                    "ports": [{"protocol": "TCP", "port": port}],
                }
            ],
        },
    }


class RunningAgentImage:
    """An agent image's Pod: its log is the agent's own output, and its exit code the result."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    @property
    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{AGENT_IMAGE_POD}"

    def describe(self) -> dict[str, Any]:
        return {"kind": "pod", "pod": AGENT_IMAGE_POD}

    async def wait(self) -> int | None:
        while True:
            pod = await self.kube.get(self._path)
            if pod is None:
                return None
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (status.get("state") or {}).get("terminated")
                if terminated:
                    return int(terminated.get("exitCode", 0))
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        await self.kube.delete(self._path)

    async def collect(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        pod = await self.kube.get(self._path)
        code: int | None = None
        for status in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated")
            if terminated:
                code = int(terminated.get("exitCode", 0))
        try:
            log = await self.kube.request_text(f"{self._path}/log")
        except ApiError:  # a Pod that never ran has no log
            log = ""
        transcript = [{"type": "agent_output", "output": log[-65_536:], "exit_code": code}]
        if code is None:
            return transcript, None
        return transcript, {"end_reason": "finished", "message": f"the agent exited with code {code}"}
