"""The agent's kubeconfig as its commands see it, and the API server it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentmatrix.agent_runner.command_sandbox import SandboxUnavailable
from agentmatrix.agent_runner.isolation import ApiRoute
from agentmatrix.cluster import kubeconfig as kubeconfig_file


def sandbox_kubeconfig(source: Path, namespace: str, route: ApiRoute | None) -> dict[str, Any]:
    """The agent's kubeconfig as the sandbox needs it: the namespace as its default and, where the
    forwarder listens elsewhere than the server's own address, the forwarder's address with the
    server's name kept for TLS verification."""
    data = kubeconfig_file.load(source) or {}
    current = data.get("current-context")
    cluster_name = None
    for entry in data.get("contexts") or []:
        if entry.get("name") == current and isinstance(entry.get("context"), dict):
            entry["context"]["namespace"] = namespace
            cluster_name = entry["context"].get("cluster")
    for entry in data.get("clusters") or []:
        cluster = entry.get("cluster")
        if route is not None and entry.get("name") == cluster_name and isinstance(cluster, dict):
            cluster["server"] = route.server
            if route.tls_server_name is not None:
                cluster["tls-server-name"] = route.tls_server_name
    return data


def current_server(data: dict[str, Any]) -> str:
    """The API server URL of the kubeconfig's current context."""
    current = data.get("current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in data.get("contexts") or []}
    clusters = {c.get("name"): c.get("cluster") or {} for c in data.get("clusters") or []}
    cluster = clusters.get(contexts.get(current, {}).get("cluster"))
    if cluster is None and len(clusters) == 1:
        cluster = next(iter(clusters.values()))
    server = (cluster or {}).get("server")
    if not isinstance(server, str):
        raise SandboxUnavailable("the agent's kubeconfig names no API server for its current context")
    return server
