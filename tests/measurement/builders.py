"""Builders of the objects the API server puts into AdmissionReviews."""

from __future__ import annotations

from typing import Any

from agentmatrix.api import names
from agentmatrix.measurement.model import Actor, Mode, Observation

AGENT_IMAGE = names.DEFAULT_AGENT_IMAGE
OTHER_IMAGE = "example.com/load-generator:v1"


def pod_template(image: str = AGENT_IMAGE, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels or {"app": "x"}},
        "spec": {"containers": [{"name": "main", "image": image}]},
    }


def workload(
    kind: str, name: str, *, image: str = AGENT_IMAGE, replicas: int | None = None, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"template": pod_template(image), **spec}
    if replicas is not None:
        body["replicas"] = replicas
    return {"kind": kind, "metadata": {"name": name}, "spec": body}


def scale(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    }


def observation(uid: str, trial: str = "t1", namespace: str | None = None, after: int = 1) -> Observation:
    return Observation(
        uid=uid,
        time=1.0,
        trial_namespace=trial,
        namespace=namespace or trial,
        name="agent",
        operation="UPDATE",
        resource="deployments",
        subresource="scale",
        kind="Scale",
        username="system:serviceaccount:t1:agent",
        actor=Actor.AGENT,
        runs_agent=True,
        counted=True,
        replicas_before=after - 1,
        replicas_after=after,
        total_before=after - 1,
        total_after=after,
        allowed=True,
        reason="",
        mode=Mode.OBSERVE,
        max_replicas=None,
        schedule=None,
    )
