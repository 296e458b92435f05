"""`agentmatrix webhook certs`: the self-signed option of deploy/, against the real API server."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from agentmatrix.cluster import controlplane
from agentmatrix.measurement import admission_config
from agentmatrix.measurement.model import Mode

pytestmark = pytest.mark.cluster


def test_certs_creates_the_serving_and_client_secrets_once_and_injects_the_ca(
    cluster: controlplane.LocalCluster, sandbox_namespace: str
) -> None:
    ns = sandbox_namespace
    name = f"certs-test-{uuid.uuid4().hex[:6]}"
    hook = admission_config.webhook_configuration(
        Mode.OBSERVE, admission_config.ClientTarget(service_namespace=ns, service_name="hook"), name=name
    )
    # Never let this configuration select a real request.
    for entry in hook["webhooks"]:
        entry["namespaceSelector"] = {"matchLabels": {"agentmatrix.dev/never": "true"}}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(hook))
    cli = [
        str(Path(sys.executable).with_name("agentmatrix")),
        "webhook",
        "certs",
        "--namespace",
        ns,
        "--service",
        "hook",
        "--secret",
        "hook-tls",
        "--configuration",
        name,
        "--client-secret",
        "client",
        "--client-ca-secret",
        "client-ca",
        "--kubeconfig",
        str(cluster.kubeconfig),
    ]
    try:
        first = subprocess.run(cli, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        assert "created" in first.stdout
        secret = json.loads(cluster.kubectl("get", "secret", "hook-tls", "-n", ns, "-o", "json").stdout)
        assert secret["type"] == "kubernetes.io/tls"
        cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert f"hook.{ns}.svc" in sans.get_values_for_type(x509.DNSName)
        configured = json.loads(
            cluster.kubectl("get", "validatingwebhookconfiguration", name, "-o", "json").stdout
        )
        bundles = {entry["clientConfig"].get("caBundle") for entry in configured["webhooks"]}
        assert bundles == {secret["data"]["ca.crt"]}

        # The API server's client certificate, and its CA's certificate alone for the webhook.
        client = json.loads(cluster.kubectl("get", "secret", "client", "-n", ns, "-o", "json").stdout)
        client_ca = json.loads(cluster.kubectl("get", "secret", "client-ca", "-n", ns, "-o", "json").stdout)
        assert set(client_ca["data"]) == {"ca.crt"}  # no key: nothing else can be signed with it
        leaf = x509.load_pem_x509_certificate(base64.b64decode(client["data"]["tls.crt"]))
        ca = x509.load_pem_x509_certificate(base64.b64decode(client_ca["data"]["ca.crt"]))
        leaf.verify_directly_issued_by(ca)
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert (
            ca.subject != x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"])).subject
        )

        second = subprocess.run(cli, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        assert "already there" in second.stdout
        again = json.loads(cluster.kubectl("get", "secret", "hook-tls", "-n", ns, "-o", "json").stdout)
        assert again["data"] == secret["data"]
        client_again = json.loads(cluster.kubectl("get", "secret", "client", "-n", ns, "-o", "json").stdout)
        assert client_again["data"] == client["data"]
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", name, check=False)
