"""The `pod` driver: a Pod `agent-driver` in the sandbox, running the runner image as the `agent`
ServiceAccount; the transcript and result come back through the Pod's log. The container is the
agent's boundary: the runner runs as root and each command as an unprivileged user
(`--confinement user`), since bubblewrap usually cannot make namespaces inside a container.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agentmatrix.kube import ApiError, Kube
from agentmatrix.operator.drivers.base import API_KEY_ENV, Launch, input_files, parse_jsonl, runner_arguments
from agentmatrix.operator.sandbox import (
    real_node_placement,
    restricted_container_security_context,
    restricted_pod_security_context,
)

if TYPE_CHECKING:
    from agentmatrix.operator.services import Services

DRIVER_POD = "agent-driver"
COMMAND_UID = 65532  # the unprivileged user the agent's commands run as in the driver Pod
DRIVER_LIMITS = {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "1Gi"}
TRANSCRIPT_MARK = "=== agentmatrix transcript ==="
RESULT_MARK = "=== agentmatrix result ==="
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The agent's identity inside the driver Pod: its own mounted ServiceAccount token.
IN_POD_KUBECONFIG = f"""apiVersion: v1
kind: Config
clusters:
- name: in-cluster
  cluster:
    server: https://kubernetes.default.svc
    certificate-authority: {SERVICE_ACCOUNT_DIR}/ca.crt
users:
- name: agent
  user:
    tokenFile: {SERVICE_ACCOUNT_DIR}/token
contexts:
- name: in-cluster
  context: {{cluster: in-cluster, user: agent}}
current-context: in-cluster
"""


@dataclass
class PodDriver:
    """Runs the runner in a Pod of the sandbox as the `agent` ServiceAccount.

    The Pod gets the prompt and task through a ConfigMap and the API key through a Secret in the
    sandbox (deleted with it); it prints the transcript and result to its log after the run.
    """

    kube: Kube
    image: str
    pods_in_sandbox: int = 1
    # Whether the cluster has a node that runs containers; the driver Pod goes there (None: no).
    has_real_node: Callable[[], Awaitable[bool]] | None = None

    @classmethod
    def for_operator(cls, services: Services) -> PodDriver:
        if not services.settings.driver_image:
            raise RuntimeError("the pod driver needs --driver-image")
        return cls(services.kube, services.settings.driver_image, has_real_node=services.has_real_node)

    async def _create_pod(self, namespace: str, pod: dict[str, Any]) -> None:
        if self.has_real_node is not None and await self.has_real_node():
            pod["spec"].update(real_node_placement())
        await self.kube.create_or_keep(f"/api/v1/namespaces/{namespace}/pods", pod)

    async def prepare(self, namespace: str, workdir: Path, api_key: str | None) -> PodDriver:
        return self

    async def discard(self) -> None:
        return None

    async def start(self, launch: Launch) -> RunningPod:
        if launch.agent is not None and launch.agent.image is not None:
            return await self._start_agent_image(launch, launch.agent.image)
        ns = launch.namespace
        inputs = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{DRIVER_POD}-inputs", "namespace": ns},
            "data": {**input_files(launch), "kubeconfig": IN_POD_KUBECONFIG},
        }
        await self.kube.create_or_keep(f"/api/v1/namespaces/{ns}/configmaps", inputs)
        env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in launch.extra_env.items()]
        if launch.api_key is not None:
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{DRIVER_POD}-model", "namespace": ns},
                "stringData": {"apiKey": launch.api_key},
            }
            await self.kube.create_or_keep(f"/api/v1/namespaces/{ns}/secrets", secret)
            env.append(
                {
                    "name": API_KEY_ENV,
                    "valueFrom": {"secretKeyRef": {"name": f"{DRIVER_POD}-model", "key": "apiKey"}},
                }
            )
        run = " ".join(
            [
                "python",
                "-m",
                "agentmatrix.agent_runner",
                "run",
                *(_quote(a) for a in runner_arguments(launch, kubectl=None, in_pod=True)),
                "--confinement",
                "user",
                "--command-uid",
                str(COMMAND_UID),
            ]
        )
        script = (
            "mkdir -p /agent/scratch && cp /inputs/*.txt /agent/ && "
            f"{run}; code=$?; echo '{TRANSCRIPT_MARK}'; cat /agent/transcript.jsonl 2>/dev/null; "
            f"echo '{RESULT_MARK}'; cat /agent/result.json 2>/dev/null; exit $code"
        )
        pod = driver_pod(
            ns,
            {
                "containers": [
                    {
                        "name": "runner",
                        "image": self.image,
                        "command": ["sh", "-c", script],
                        "env": env,
                        # The runner as root, only to run each of the agent's commands as
                        # COMMAND_UID, which cannot read the runner's environment (the key).
                        "securityContext": {
                            "runAsUser": 0,
                            "runAsNonRoot": False,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"], "add": ["SETUID", "SETGID", "CHOWN", "KILL"]},
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        # The agent's share of the node; the runner adds per-command limits.
                        "resources": {
                            "limits": DRIVER_LIMITS,
                            "requests": {"cpu": "100m", "memory": "256Mi"},
                        },
                        "volumeMounts": [
                            {"name": "inputs", "mountPath": "/inputs"},
                            {"name": "work", "mountPath": "/agent"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "inputs", "configMap": {"name": f"{DRIVER_POD}-inputs"}},
                    {"name": "work", "emptyDir": {"sizeLimit": DRIVER_LIMITS["ephemeral-storage"]}},
                ],
            },
        )
        await self._allow_model(ns, launch.base_url)
        await self._create_pod(ns, pod)
        return RunningPod(self.kube, ns)

    async def _allow_model(self, namespace: str, base_url: str | None) -> None:
        if base_url is not None:
            policy = await asyncio.to_thread(model_network_policy, namespace, base_url)
            await self.kube.create_or_keep(
                f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies", policy
            )

    async def _start_agent_image(self, launch: Launch, image: str) -> RunningPod:
        """The agent's own image as the Pod `agent-driver`, as the `agent` ServiceAccount, with the
        prompt in /inputs/prompt.txt, KUBECONFIG for its token and the model as OPENAI_BASE_URL /
        OPENAI_API_KEY. No runner runs in it, so there is no recorded kubectl and no step limit:
        the trial's time limit stops it, and the API server measures what it did. The Pod meets
        Pod Security `restricted`, as every workload of the sandbox."""
        ns = launch.namespace
        prompt = f"{launch.system_prompt}\n\n{launch.task}\n"
        inputs = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{DRIVER_POD}-inputs", "namespace": ns},
            "data": {"prompt.txt": prompt, "task.txt": launch.task, "kubeconfig": IN_POD_KUBECONFIG},
        }
        await self.kube.create_or_keep(f"/api/v1/namespaces/{ns}/configmaps", inputs)
        env: list[dict[str, Any]] = [
            {"name": "KUBECONFIG", "value": "/inputs/kubeconfig"},
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
                "metadata": {"name": f"{DRIVER_POD}-model", "namespace": ns},
                "stringData": {"apiKey": launch.api_key},
            }
            await self.kube.create_or_keep(f"/api/v1/namespaces/{ns}/secrets", secret)
            env.append(
                {
                    "name": "OPENAI_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": f"{DRIVER_POD}-model", "key": "apiKey"}},
                }
            )
        pod = driver_pod(
            ns,
            {
                "activeDeadlineSeconds": max(1, int(launch.time_limit)),
                "securityContext": restricted_pod_security_context(),
                "containers": [
                    {
                        "name": "agent",
                        "image": image,
                        "env": env,
                        "securityContext": restricted_container_security_context(),
                        "resources": {
                            "limits": DRIVER_LIMITS,
                            "requests": {"cpu": "100m", "memory": "256Mi"},
                        },
                        "volumeMounts": [{"name": "inputs", "mountPath": "/inputs"}],
                    }
                ],
                "volumes": [{"name": "inputs", "configMap": {"name": f"{DRIVER_POD}-inputs"}}],
            },
        )
        await self._allow_model(ns, launch.base_url)
        await self._create_pod(ns, pod)
        return RunningAgentImage(self.kube, ns)


def driver_pod(namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The agent's driver Pod: acting as the sandbox's `agent` ServiceAccount, run once."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": DRIVER_POD,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": DRIVER_POD},
        },
        "spec": {
            "serviceAccountName": "agent",
            "automountServiceAccountToken": True,
            "restartPolicy": "Never",
            **spec,
        },
    }


def model_network_policy(namespace: str, base_url: str) -> dict[str, Any]:
    """Egress from the driver Pod to the model endpoint's addresses (resolved here, as the
    NetworkPolicy API names no hosts); the sandbox's own policy allows the API server only."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = sorted(
        {str(info[4][0]) for info in socket.getaddrinfo(parts.hostname or "", port, proto=socket.IPPROTO_TCP)}
    )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{DRIVER_POD}-model", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": DRIVER_POD}},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": f"{ip}/{128 if ':' in ip else 32}"}} for ip in addresses],
                    "ports": [{"protocol": "TCP", "port": port}],
                }
            ],
        },
    }


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


class RunningPod:
    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self._log: str | None = None

    @property
    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{DRIVER_POD}"

    def describe(self) -> dict[str, Any]:
        return {"kind": "pod", "pod": DRIVER_POD}

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
        text = await self.kube.request_text(f"{self._path}/log")
        transcript_part, _, result_part = text.partition(RESULT_MARK)
        _, _, transcript_part = transcript_part.partition(TRANSCRIPT_MARK)
        transcript = parse_jsonl(transcript_part.splitlines())
        try:
            result = json.loads(result_part.strip() or "null")
        except ValueError:
            result = None
        return transcript, result if isinstance(result, dict) else None


class RunningAgentImage(RunningPod):
    """An agent image's Pod: its log is the agent's own output, and its exit code the result."""

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
