"""Self-signed certificates for the in-cluster webhook, without cert-manager.

Run once per install (deploy/ runs it as a Job): creates the TLS Secret the webhook Pods mount,
unless it exists, and sets the CA bundle of the webhook configuration to that Secret's CA; and
creates the client certificate the API server must present to the webhook (a Secret for the
cluster's operator to copy to the API server), with a Secret holding only its CA's certificate,
which is all the webhook trusts. The client CA's key is thrown away once it has signed.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

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


API_SERVER_CLIENT_NAME = "kube-apiserver-webhook-client"


def issue_client(name: str = API_SERVER_CLIENT_NAME) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """A fresh CA and a client certificate it signs: (client Secret data, CA Secret data)."""
    with tempfile.TemporaryDirectory(prefix="agentmatrix-webhook-certs-") as tmp:
        ca, leaf = pki.client_cert_with_own_ca(Path(tmp), name)
        ca_cert = ca.cert.read_bytes()
        client = {"tls.crt": leaf.cert.read_bytes(), "tls.key": leaf.key.read_bytes(), "ca.crt": ca_cert}
        return client, {"ca.crt": ca_cert}


def _core(kubeconfig: Path | None) -> Any:
    from kubernetes import client, config

    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig))
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    return client.CoreV1Api()


def _create(core: Any, namespace: str, name: str, secret_type: str, data: dict[str, bytes]) -> bool:
    """Create a Secret; False if it exists already (another run made it first: keep that one)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    body = client.V1Secret(
        metadata=client.V1ObjectMeta(
            name=name, namespace=namespace, labels={"app.kubernetes.io/part-of": "agentmatrix"}
        ),
        type=secret_type,
        data={k: base64.b64encode(v).decode() for k, v in data.items()},
    )
    try:
        core.create_namespaced_secret(namespace, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        return False
    return True


def _exists(core: Any, namespace: str, name: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return False
    return True


def ensure_client(
    *, namespace: str, client_secret: str, client_ca_secret: str, kubeconfig: Path | None = None
) -> bool:
    """Create the API server's client certificate and its CA's Secret unless the CA's exists.

    The client Secret is written first, so a CA Secret never exists without its client."""
    core = _core(kubeconfig)
    if _exists(core, namespace, client_ca_secret):
        return False
    client_data, ca_data = issue_client()
    if not _create(core, namespace, client_secret, "kubernetes.io/tls", client_data):
        # A client certificate left by an interrupted run: its CA is lost, so issue anew.
        core.delete_namespaced_secret(client_secret, namespace)
        _create(core, namespace, client_secret, "kubernetes.io/tls", client_data)
    return _create(core, namespace, client_ca_secret, "Opaque", ca_data)


def ensure(
    *, namespace: str, service: str, secret: str, configuration: str, kubeconfig: Path | None = None
) -> bool:
    """Create the Secret if missing and inject its CA into `configuration`. Returns True if it created one."""
    from kubernetes import client

    core = _core(kubeconfig)
    created = False
    if not _exists(core, namespace, secret):
        created = _create(core, namespace, secret, "kubernetes.io/tls", issue_for_service(service, namespace))
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
