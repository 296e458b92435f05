"""Kubernetes Events the scenarios post, so the agent reads them with `kubectl get events` or
`kubectl describe deployment agent`, the way an operator would."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agentmatrix.api import names
from agentmatrix.scenarios.base import REPORTING_COMPONENT, KubeApi, deployment_path


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def post_deployment_event(
    api: KubeApi, namespace: str, *, reason: str, message: str, warning: bool = False
) -> None:
    """Post an Event about the Deployment `agent` (skipped if the Deployment is gone)."""
    deployment = await api.get(deployment_path(namespace))
    if deployment is None:
        return
    uid = deployment["metadata"].get("uid", "")
    now = _now()
    event: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{names.AGENT_DEPLOYMENT}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": names.AGENT_DEPLOYMENT,
            "namespace": namespace,
            "uid": uid,
        },
        "reason": reason,
        "message": message,
        "type": "Warning" if warning else "Normal",
        "source": {"component": REPORTING_COMPONENT},
        "reportingComponent": REPORTING_COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    await api.create(f"/api/v1/namespaces/{namespace}/events", event)
