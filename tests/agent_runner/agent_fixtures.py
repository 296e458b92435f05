"""Types and objects shared by the agent runner tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentmatrix.agent_runner.config import AgentConfig
from agentmatrix.api import names

MakeConfig = Callable[..., AgentConfig]


@dataclass(frozen=True)
class AgentSandbox:
    namespace: str
    kubeconfig: Path  # acts as ServiceAccount `agent` in `namespace`
    kubectl: Path


def agent_objects(namespace: str) -> list[dict[str, Any]]:
    labels = {names.LABEL_ROLE: names.ROLE_AGENT, "app": "agent"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": names.AGENT_SERVICE_ACCOUNT}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": names.AGENT_DEPLOYMENT, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "agent", "image": names.DEFAULT_AGENT_IMAGE}]},
                },
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "agent"},
            "rules": [
                {
                    "apiGroups": ["apps"],
                    "resources": ["deployments", "deployments/scale"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                },
                {
                    "apiGroups": [""],
                    "resources": ["pods", "configmaps", "services", "events"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "agent"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent"},
            "subjects": [
                {"kind": "ServiceAccount", "name": names.AGENT_SERVICE_ACCOUNT, "namespace": namespace}
            ],
        },
    ]
