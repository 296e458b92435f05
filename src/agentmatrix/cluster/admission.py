"""How the API server authenticates to admission webhooks: an `AdmissionConfiguration` whose
webhook plugins read a kubeconfig with a client certificate per webhook host.

The kube-apiserver flag is `--admission-control-config-file`. The kubeconfig's `users` are
matched by the webhook's host: `NAME.NAMESPACE.svc` (a Service on port 443),
`NAME.NAMESPACE.svc:PORT`, `HOST:PORT` of a URL, `*.domain`, or `*` for every webhook.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from agentmatrix.cluster import kubeconfig
from agentmatrix.cluster.pki import CertPair

WEBHOOK_PLUGINS = ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
EVERY_WEBHOOK = "*"


def client_kubeconfig(client: CertPair, hosts: tuple[str, ...] = (EVERY_WEBHOOK,)) -> dict[str, Any]:
    """A kubeconfig that presents `client` to webhooks at `hosts` (certificate embedded)."""
    credentials = {
        "client-certificate-data": base64.b64encode(client.cert.read_bytes()).decode(),
        "client-key-data": base64.b64encode(client.key.read_bytes()).decode(),
    }
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "users": [{"name": host, "user": credentials} for host in hosts],
    }


def admission_configuration(client_kubeconfig_path: Path | str) -> dict[str, Any]:
    """The `AdmissionConfiguration` that points both webhook plugins at the client kubeconfig."""
    return {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {
                "name": plugin,
                "configuration": {
                    "apiVersion": "apiserver.config.k8s.io/v1",
                    "kind": "WebhookAdmissionConfiguration",
                    "kubeConfigFile": str(client_kubeconfig_path),
                },
            }
            for plugin in WEBHOOK_PLUGINS
        ],
    }


def write(directory: Path, client: CertPair, hosts: tuple[str, ...] = (EVERY_WEBHOOK,)) -> Path:
    """Write the client kubeconfig and the AdmissionConfiguration; returns the latter's path."""
    directory.mkdir(parents=True, exist_ok=True)
    client_path = directory / "webhook-client.kubeconfig"
    client_path.write_text(kubeconfig.dump(client_kubeconfig(client, hosts)))
    client_path.chmod(0o600)
    config_path = directory / "admission-configuration.yaml"
    config_path.write_text(kubeconfig.dump(admission_configuration(client_path)))
    return config_path
