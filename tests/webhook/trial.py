"""A trial's sandbox for the cluster tests: policy annotations, the agent's identity and service."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentmatrix.api import names
from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.measurement.ledger import read_observations
from agentmatrix.measurement.model import Actor, Observation

IMAGE = names.DEFAULT_AGENT_IMAGE
OTHER_IMAGE = "example.com/tool:v1"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def setup_trial(
    cluster: LocalCluster,
    namespace: str,
    *,
    mode: str = "observe",
    cap: int | None = None,
    ban: bool = False,
    agent_replicas: int = 1,
) -> Path:
    """Annotate the sandbox, give the agent the `edit` role, create its Deployment (as the operator
    would); returns a kubeconfig that acts as the agent's ServiceAccount."""
    annotations = [f"{names.ANNOTATION_MODE}={mode}", f"{names.ANNOTATION_AGENT_IMAGE}={IMAGE}"]
    if cap is not None:
        annotations.append(f"{names.ANNOTATION_REPLICA_CAP}={cap}")
    annotations.append(f"{names.ANNOTATION_BAN_NEW_WORKLOADS}={'true' if ban else 'false'}")
    cluster.kubectl("annotate", "namespace", namespace, "--overwrite", *annotations)
    for account in ("agent", "terminator"):
        cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
        cluster.kubectl(
            "create",
            "rolebinding",
            f"{account}-edit",
            "--clusterrole=edit",
            f"--serviceaccount={namespace}:{account}",
            "-n",
            namespace,
        )
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(agent_deployment(agent_replicas)))
    kubeconfig: Path = cluster.service_account_kubeconfig(namespace, "agent")
    return kubeconfig


def agent_deployment(replicas: int) -> dict[str, Any]:
    labels = {names.LABEL_ROLE: names.ROLE_AGENT, "app": "agent"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": names.AGENT_DEPLOYMENT, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "agent", "image": IMAGE}]},
            },
        },
    }


def wait_until_observed(cluster: LocalCluster, namespace: str, ledger: Path, mode: str) -> None:
    """Touch the agent's Deployment until the webhook records it under the trial's current policy:
    the registration has reached the API server and the webhook has the namespace's annotations."""
    attempt = 0

    def seen() -> bool:
        nonlocal attempt
        attempt += 1
        cluster.kubectl("label", "deployment", "agent", "-n", namespace, f"probe={attempt}", "--overwrite")
        last = read_observations(ledger, namespace)[-1:]
        return any(o.name == "agent" and o.mode.value == mode for o in last)

    wait_for(seen, f"the webhook to observe {namespace} in {mode} mode")


def observation(
    ledger: Path, namespace: str, operation: str, target: str, name: str, actor: Actor = Actor.AGENT
) -> Observation:
    found = [
        o
        for o in read_observations(ledger, namespace)
        if (o.operation, o.target, o.name, o.actor) == (operation, target, name, actor)
    ]
    assert found, f"no observation of {operation} {target}/{name} by {actor} in {namespace}"
    return found[-1]


def manifest(kind: str, name: str, *, image: str = IMAGE, replicas: int | None = None, **spec: Any) -> str:
    api_version = {"Job": "batch/v1", "CronJob": "batch/v1", "ReplicationController": "v1"}.get(
        kind, "apps/v1"
    )
    labels = {"app": name}
    pod_spec: dict[str, Any] = {"containers": [{"name": "main", "image": image}]}
    template: dict[str, Any] = {"metadata": {"labels": labels}, "spec": pod_spec}
    body: dict[str, Any] = dict(spec)
    if kind == "CronJob":
        job_spec = {"template": {**template, "spec": {**pod_spec, "restartPolicy": "Never"}}}
        job_spec.update(body.pop("job", {}))
        body = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": job_spec}, **body}
    elif kind == "Job":
        body["template"] = {**template, "spec": {**pod_spec, "restartPolicy": "Never"}}
    else:
        body["template"] = template
        body["selector"] = labels if kind == "ReplicationController" else {"matchLabels": labels}
    if kind == "StatefulSet":
        body["serviceName"] = name
    if replicas is not None:
        body["replicas"] = replicas
    return json.dumps({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "spec": body})
