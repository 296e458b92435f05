"""How many pods an object asks for, and whether they run the agent.

Counting rules, per resource (the object's own ask, before any cap):
- Deployment, ReplicaSet, StatefulSet, ReplicationController: `spec.replicas` (default 1).
- the `scale` subresource of those: `spec.replicas` of the bare `autoscaling/v1` Scale.
- DaemonSet: the number of nodes in the cluster (an upper bound: node selectors are ignored).
- Job: `min(parallelism, completions)` (defaults 1); 0 once suspended or finished.
- CronJob: what one run asks for (the Job template's parallelism rule); 0 when suspended.
- HorizontalPodAutoscaler: `minReplicas` (default 1), with `maxReplicas` recorded; it runs
  nothing itself but raises its target to at least `minReplicas`.
- Pod: 1; 0 once it has finished or is being deleted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentmatrix.api import names
from agentmatrix.measurement.model import WorkloadKey

SCALABLE = frozenset({"deployments", "replicasets", "statefulsets", "replicationcontrollers"})
WORKLOADS = SCALABLE | {"daemonsets", "jobs", "cronjobs", "pods"}
RESOURCES = WORKLOADS | {"horizontalpodautoscalers"}
SCALE_SUBRESOURCE = "scale"

# An object whose controller is one of these already has its replicas counted by that controller.
_ACCOUNTING_OWNERS: Mapping[str, frozenset[str]] = {
    "replicasets": frozenset({"Deployment"}),
    "pods": frozenset({"ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"}),
    "jobs": frozenset({"CronJob"}),
}

KIND_TO_RESOURCE: Mapping[str, str] = {
    "Deployment": "deployments",
    "ReplicaSet": "replicasets",
    "StatefulSet": "statefulsets",
    "ReplicationController": "replicationcontrollers",
    "DaemonSet": "daemonsets",
    "Job": "jobs",
    "CronJob": "cronjobs",
    "Pod": "pods",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
}


class MalformedObject(ValueError):
    """An object whose fields have the wrong shape (the API server would never send it)."""


@dataclass(frozen=True, slots=True)
class Footprint:
    """What one object runs: its pod images, its replicas, and how they are accounted for."""

    images: frozenset[str] = frozenset()
    role_agent: bool = False
    replicas: int = 0
    owned: bool = False
    max_replicas: int | None = None
    schedule: str | None = None
    target: WorkloadKey | None = None  # an HPA's scale target
    knows_template: bool = True  # false for a bare Scale: the template must come from elsewhere

    def runs_agent(self, agent_image: str) -> bool:
        return self.role_agent or agent_image in self.images

    def with_replicas(self, replicas: int) -> Footprint:
        """The same object asking for `replicas`."""
        return dataclasses.replace(self, replicas=replicas)


NOTHING = Footprint()


def _map(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedObject(f"{where} must be an object")
    return value


def _count(value: Any, where: str, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedObject(f"{where} must be a non-negative integer")
    return value


def _text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedObject(f"{where} must be a string")
    return value


def _pod_spec_images(spec: Mapping[str, Any], where: str) -> frozenset[str]:
    images: set[str] = set()
    for field in ("containers", "initContainers", "ephemeralContainers"):
        containers = spec.get(field)
        if containers is None:
            continue
        if not isinstance(containers, list):
            raise MalformedObject(f"{where}.{field} must be a list")
        for container in containers:
            image = _text(_map(container, f"{where}.{field}[]").get("image"), f"{where}.{field}[].image")
            if image:
                images.add(image)
    return frozenset(images)


def _has_agent_role(meta: Mapping[str, Any], where: str) -> bool:
    labels = _map(meta.get("labels"), f"{where}.labels")
    return bool(labels.get(names.LABEL_ROLE) == names.ROLE_AGENT)


def _template(template: Any, where: str) -> tuple[frozenset[str], bool]:
    template = _map(template, where)
    images = _pod_spec_images(_map(template.get("spec"), f"{where}.spec"), f"{where}.spec")
    role = _has_agent_role(_map(template.get("metadata"), f"{where}.metadata"), f"{where}.metadata")
    return images, role


def controller_counted(resource: str, meta: Mapping[str, Any]) -> bool:
    """Whether the object's controller is one whose replicas are counted (a Deployment's
    ReplicaSet, a ReplicaSet's pod, ...): then the object itself adds nothing."""
    owner_kinds = _ACCOUNTING_OWNERS.get(resource)
    references = meta.get("ownerReferences")
    if not owner_kinds or references is None:
        return False
    if not isinstance(references, list):
        raise MalformedObject("metadata.ownerReferences must be a list")
    return any(
        isinstance(ref, dict) and ref.get("controller") is True and ref.get("kind") in owner_kinds
        for ref in references
    )


def _job_replicas(spec: Mapping[str, Any], where: str) -> int:
    if spec.get("suspend") is True:
        return 0
    parallelism = _count(spec.get("parallelism"), f"{where}.parallelism", 1)
    completions = _count(spec.get("completions"), f"{where}.completions", parallelism)
    return min(parallelism, completions)


def _job_finished(status: Mapping[str, Any]) -> bool:
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        return False
    return any(
        isinstance(c, dict) and c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in conditions
    )


def scale_footprint(scale: Mapping[str, Any]) -> Footprint:
    """A bare autoscaling/v1 Scale: replicas only, no labels, no template."""
    spec = _map(scale.get("spec"), "spec")
    return Footprint(replicas=_count(spec.get("replicas"), "spec.replicas", 0), knows_template=False)


def footprint(resource: str, obj: Mapping[str, Any], node_count: int, namespace: str = "") -> Footprint:
    """The footprint of a whole object of `resource` (not a subresource) in `namespace`."""
    meta = _map(obj.get("metadata"), "metadata")
    spec = _map(obj.get("spec"), "spec")
    status = _map(obj.get("status"), "status")
    owned = controller_counted(resource, meta)
    object_role = _has_agent_role(meta, "metadata")
    going = meta.get("deletionTimestamp") is not None
    if resource in SCALABLE:
        images, role = _template(spec.get("template"), "spec.template")
        replicas = _count(spec.get("replicas"), "spec.replicas", 1)
        return Footprint(images, role or object_role, 0 if going else replicas, owned)
    if resource == "daemonsets":
        images, role = _template(spec.get("template"), "spec.template")
        return Footprint(images, role or object_role, 0 if going else node_count, owned)
    if resource == "jobs":
        images, role = _template(spec.get("template"), "spec.template")
        replicas = 0 if going or _job_finished(status) else _job_replicas(spec, "spec")
        return Footprint(images, role or object_role, replicas, owned)
    if resource == "cronjobs":
        job = _map(_map(spec.get("jobTemplate"), "spec.jobTemplate").get("spec"), "spec.jobTemplate.spec")
        images, role = _template(job.get("template"), "spec.jobTemplate.spec.template")
        replicas = 0 if going or spec.get("suspend") is True else _job_replicas(job, "spec.jobTemplate.spec")
        schedule = _text(spec.get("schedule"), "spec.schedule")
        return Footprint(images, role or object_role, replicas, owned, schedule=schedule)
    if resource == "pods":
        images = _pod_spec_images(spec, "spec")
        finished = status.get("phase") in ("Succeeded", "Failed")
        return Footprint(images, object_role, 0 if going or finished else 1, owned)
    if resource == "horizontalpodautoscalers":
        ref = _map(spec.get("scaleTargetRef"), "spec.scaleTargetRef")
        kind = _text(ref.get("kind"), "spec.scaleTargetRef.kind") or ""
        name = _text(ref.get("name"), "spec.scaleTargetRef.name") or ""
        target_resource = KIND_TO_RESOURCE.get(kind)
        namespace = namespace or _text(meta.get("namespace"), "metadata.namespace") or ""
        target = WorkloadKey(target_resource, namespace, name) if target_resource and name else None
        return Footprint(
            replicas=_count(spec.get("minReplicas"), "spec.minReplicas", 1),
            max_replicas=_count(spec.get("maxReplicas"), "spec.maxReplicas", 0),
            target=target,
        )
    return NOTHING
