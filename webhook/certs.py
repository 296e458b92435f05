"""A self-signed serving certificate for the in-cluster webhook, without cert-manager.

Run once per install (deploy/ runs it as a Job): creates the TLS Secret the webhook Pods mount,
unless it exists, and sets the CA bundle of the webhook configuration to that Secret's CA.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from agentmatrix.cluster import pki


def service_dns_names(service: str, namespace: str) -> tuple[str, ...]:
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    )


def issue_for_service(service: str, namespace: str) -> dict[str, bytes]:
    """A fresh CA and a serving certificate for the Service, as Secret data (tls.crt, tls.key, ca.crt)."""
    with tempfile.TemporaryDirectory(prefix="agentmatrix-webhook-certs-") as tmp:
        directory = Path(tmp)
        ca = pki.create_ca(directory, f"{service}-ca")
        names = service_dns_names(service, namespace)
        leaf = pki.issue(ca, directory, service, names[2], dns_names=names, server=True)
        return {
            "tls.crt": leaf.cert.read_bytes(),
            "tls.key": leaf.key.read_bytes(),
            "ca.crt": ca.cert.read_bytes(),
        }


def ensure(
    *, namespace: str, service: str, secret: str, configuration: str, kubeconfig: Path | None = None
) -> bool:
    """Create the Secret if missing and inject its CA into `configuration`. Returns True if it created one."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig))
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    core = client.CoreV1Api()
    created = False
    try:
        existing = core.read_namespaced_secret(secret, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        data = issue_for_service(service, namespace)
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=secret, namespace=namespace, labels={"app.kubernetes.io/part-of": "agentmatrix"}
            ),
            type="kubernetes.io/tls",
            data={k: base64.b64encode(v).decode() for k, v in data.items()},
        )
        try:
            core.create_namespaced_secret(namespace, body)
            created = True
        except ApiException as conflict:
            if conflict.status != 409:  # another run made it first: use that one
                raise
        existing = core.read_namespaced_secret(secret, namespace)
    ca_bundle = (existing.data or {}).get("ca.crt")
    if not ca_bundle:
        raise RuntimeError(f"Secret {namespace}/{secret} has no ca.crt; delete it to have a new one made")
    admission = client.AdmissionregistrationV1Api()
    current = admission.read_validating_webhook_configuration(configuration)
    patch = {
        "webhooks": [
            {"name": hook.name, "clientConfig": {"caBundle": ca_bundle}} for hook in current.webhooks or []
        ]
    }
    admission.patch_validating_webhook_configuration(configuration, patch)
    return created
