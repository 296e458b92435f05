"""A sandbox's life in the API: creating its objects (`sandbox_objects`) in order, minting the
tokens its agent acts with, finding an eval's sandboxes again, and deleting them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
from collections.abc import Awaitable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agentmatrix.api import names
from agentmatrix.api.replicationeval import ArmSpec
from agentmatrix.cluster import kubeconfig as kubeconfig_file
from agentmatrix.kube import Kube
from agentmatrix.operator.sandbox_objects import (
    OPERATIONS_ROLE,
    Framing,
    SandboxSettings,
    agent_deployment,
    agent_service,
    eval_selector,
    network_policy,
    resource_quota,
    role,
    role_binding,
    service_account,
)
from agentmatrix.scenarios import identity
from agentmatrix.scenarios.base import OPERATIONS_SERVICE_ACCOUNT, Scenario


async def api_server_endpoints(kube: Kube) -> list[tuple[str, int]]:
    """The API server's own addresses and port: the `kubernetes` Service's EndpointSlices, or,
    where no controller keeps them (a local control plane), the address the operator talks to."""
    slices = await kube.list(
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        label_selector="kubernetes.io/service-name=kubernetes",
    )
    found: list[tuple[str, int]] = []
    for endpoint_slice in slices:
        ports = [
            int(p["port"]) for p in endpoint_slice.get("ports") or [] if p.get("name", "https") == "https"
        ]
        for endpoint in endpoint_slice.get("endpoints") or []:
            found += [(str(address), port) for address in endpoint.get("addresses") or [] for port in ports]
    if found:
        return found
    server = urlsplit(kube.access.server)
    with contextlib.suppress(ValueError):
        return [(str(ipaddress.ip_address(server.hostname or "")), server.port or 443)]
    return []


def collection(obj: dict[str, Any]) -> str:
    namespace = obj["metadata"].get("namespace")
    api_version = obj["apiVersion"]
    plural = {
        "Namespace": "namespaces",
        "ServiceAccount": "serviceaccounts",
        "Role": "roles",
        "RoleBinding": "rolebindings",
        "ResourceQuota": "resourcequotas",
        "Deployment": "deployments",
        "Service": "services",
        "ConfigMap": "configmaps",
        "Pod": "pods",
        "Secret": "secrets",
        "NetworkPolicy": "networkpolicies",
    }[obj["kind"]]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


async def create_sandbox(
    kube: Kube,
    namespace_obj: dict[str, Any],
    *,
    scenario: Scenario,
    arm: ArmSpec,
    settings: SandboxSettings,
) -> None:
    """Create the quota, accounts, roles and the scenario's objects in the (existing) namespace:
    everything but the agent's workload. Objects that already exist are kept (idempotent)."""
    namespace = namespace_obj["metadata"]["name"]
    objects = [
        resource_quota(namespace, arm, settings),
        service_account(namespace, names.AGENT_SERVICE_ACCOUNT),
        service_account(namespace, OPERATIONS_SERVICE_ACCOUNT),
        role(namespace, names.AGENT_SERVICE_ACCOUNT, scenario.agent_rules()),
        role(namespace, OPERATIONS_ROLE, scenario.operations_rules()),
        role_binding(namespace, names.AGENT_SERVICE_ACCOUNT, names.AGENT_SERVICE_ACCOUNT),
        role_binding(namespace, OPERATIONS_ROLE, OPERATIONS_SERVICE_ACCOUNT),
        *scenario.objects(namespace),
    ]

    async def create_network_policy() -> None:
        policy = network_policy(namespace, await api_server_endpoints(kube))
        await kube.create_or_keep(collection(policy), policy)

    await create_objects(kube, objects, create_network_policy())


async def create_objects(kube: Kube, objects: list[dict[str, Any]], *alongside: Awaitable[Any]) -> None:
    """Create `objects` (keeping those that exist) concurrently with `alongside`, RoleBindings
    last: the API server checks a binding against its Role (RBAC forbids granting what one does
    not hold), which must exist by then, unless the caller may bind any role (cluster-admin may;
    the operator installed by deploy/ may not)."""
    bindings = [obj for obj in objects if obj["kind"] == "RoleBinding"]
    rest = [obj for obj in objects if obj["kind"] != "RoleBinding"]
    await asyncio.gather(*alongside, *(kube.create_or_keep(collection(obj), obj) for obj in rest))
    await asyncio.gather(*(kube.create_or_keep(collection(obj), obj) for obj in bindings))


async def create_agent_workload(
    kube: Kube,
    namespace: str,
    agent_image: str,
    replicas: int,
    framing: Framing | None = None,
    real_node: bool = False,
) -> None:
    """The agent's Deployment and the Service in front of it (with or after `create_sandbox`), and
    in the self framing the ConfigMap that says what its pods run; on a cluster with a real node,
    the Deployment's pods run there as containers."""
    framing = framing or Framing()
    objects = [
        agent_deployment(namespace, agent_image, replicas, framing, real_node),
        agent_service(namespace),
        *identity.environment_objects(namespace, framing.identity, framing.model, agent_image),
    ]
    await asyncio.gather(*(kube.create_or_keep(collection(obj), obj) for obj in objects))


async def mint_token(kube: Kube, namespace: str, account: str, seconds: int) -> str:
    """A bound token for a ServiceAccount (TokenRequest API); never stored in the cluster."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": max(600, seconds)},
    }
    result = await kube.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", body)
    return str(result["status"]["token"])


def write_kubeconfig(
    path: Path,
    server: str,
    ca: bytes | None,
    token: str,
    namespace: str,
    account: str = names.AGENT_SERVICE_ACCOUNT,
) -> Path:
    """A kubeconfig (mode 0600) acting as the sandbox's ServiceAccount `account` with `token`."""
    cluster: dict[str, Any] = {"server": server}
    if ca:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    user = names.service_account_username(namespace, account)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": "sandbox", "context": {"cluster": "sandbox", "user": user, "namespace": namespace}}
        ],
        "current-context": "sandbox",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(kubeconfig_file.dump(config))
    return path


async def delete_namespace(kube: Kube, namespace: str) -> bool:
    """Deletes a sandbox: its namespace, then its pods at once.

    The namespace goes first, so that no controller can make a pod in it again. Its pods are then
    deleted with no grace period: a finished trial's pods are garbage, and until they are gone
    from the API their requests hold the node's capacity, which the next trial's pods wait for
    (the namespace controller reaches pods only after every other kind, and a graceful deletion
    waits for the kubelet). The kubelet stops their containers as soon as it sees them deleted."""
    deleted = await kube.delete(f"/api/v1/namespaces/{namespace}")
    if deleted:
        await kube.delete(f"/api/v1/namespaces/{namespace}/pods", grace_period_seconds=0)
    return deleted


async def sandboxes_of(kube: Kube, eval_uid: str) -> list[dict[str, Any]]:
    return await kube.list("/api/v1/namespaces", label_selector=eval_selector(eval_uid))
