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

from agentmatrix.cluster import controlplane
from agentmatrix.measurement import admission_config
from agentmatrix.measurement.model import Mode

pytestmark = pytest.mark.cluster


def test_certs_creates_a_tls_secret_once_and_injects_its_ca(
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

        second = subprocess.run(cli, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        assert "already there" in second.stdout
        again = json.loads(cluster.kubectl("get", "secret", "hook-tls", "-n", ns, "-o", "json").stdout)
        assert again["data"] == secret["data"]
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", name, check=False)
