"""What the pod driver puts in a sandbox: the shell Pod (and an agent image's Pod) acting as the
`agent` ServiceAccount through a projected token, Pod Security `restricted`; the runner's exec
identity (a ClusterRole bound in each sandbox); an agent image's egress to its model."""

from __future__ import annotations

import math
import socket
import zlib
from typing import Any
from urllib.parse import urlsplit

from agentmatrix.api import names
from agentmatrix.kube import Kube
from agentmatrix.operator import sandbox_objects
from agentmatrix.operator.sandbox_objects import (
    restricted_container_security_context,
    restricted_pod_security_context,
)

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
        pod_spec.update(sandbox_objects.real_node_placement())
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
    binding = sandbox_objects.role_binding(namespace, names.SHELL_EXEC_CLUSTER_ROLE, account, "ClusterRole")
    return [sandbox_objects.service_account(namespace, account), binding]


async def ensure_shell_exec_role(kube: Kube) -> None:
    """The ClusterRole the sandboxes bind, made if it is missing (an install ships it)."""
    roles = "/apis/rbac.authorization.k8s.io/v1/clusterroles"
    if await kube.get(f"{roles}/{names.SHELL_EXEC_CLUSTER_ROLE}") is None:
        await kube.create_or_keep(roles, shell_exec_cluster_role())


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
