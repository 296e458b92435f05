"""`spec.agent.image` in pod mode: the agent's own image as the Pod `agent-driver`, with no runner;
its log is the agent's output and its exit code the result."""

from __future__ import annotations

import asyncio
from typing import Any

from agentmatrix.kube import ApiError, Kube
from agentmatrix.operator.drivers.base import Launch
from agentmatrix.operator.drivers.pod_objects import (
    AGENT_IMAGE_LIMITS,
    AGENT_IMAGE_POD,
    AGENT_IMAGE_REQUESTS,
    driver_pod,
    model_network_policy,
)
from agentmatrix.operator.sandbox_objects import (
    restricted_container_security_context,
    restricted_pod_security_context,
)


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
