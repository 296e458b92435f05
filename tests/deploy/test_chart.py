"""The Helm chart's values: the release namespace and the images everywhere, monitoring objects
only where their API exists, certificates made once, and bad values refused naming the field
(`helm template` and `helm lint`, no cluster)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from agentmatrix.cluster import pki
from tests.deploy.test_deploy import CHART, MONITORING_APIS, helm, helm_rendered, helm_template, key

OTHER = "evals-infra"


def containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pods = [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "Job")]
    return [c for pod in pods for c in pod["containers"]]


def test_helm_lint_passes() -> None:
    linted = subprocess.run([helm(), "lint", "--strict", str(CHART)], capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_every_object_is_in_the_release_namespace_and_points_there() -> None:
    rendered = helm_template("--namespace", OTHER)
    assert rendered.returncode == 0, rendered.stderr
    assert "agentmatrix-system" not in rendered.stdout
    objects = helm_rendered("--namespace", OTHER)
    cluster_scoped = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                      "ValidatingWebhookConfiguration"}  # fmt: skip
    for obj in objects:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"]["namespace"] == OTHER, key(obj)
    for obj in objects:
        for subject in obj.get("subjects", []):
            assert subject["namespace"] == OTHER
    (configuration,) = [o for o in objects if o["kind"] == "ValidatingWebhookConfiguration"]
    for hook in configuration["webhooks"]:
        assert hook["clientConfig"]["service"]["namespace"] == OTHER
        (excluded,) = [e for e in hook["namespaceSelector"]["matchExpressions"] if e["operator"] == "NotIn"
                       and e["key"] == "kubernetes.io/metadata.name"]  # fmt: skip
        assert OTHER in excluded["values"]  # the webhook never judges its own namespace
    (serving,) = [
        o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "agentmatrix-webhook-tls"
    ]
    certificate = base64.b64decode(serving["data"]["tls.crt"])
    assert certificate.startswith(b"-----BEGIN CERTIFICATE-----")
    names = x509.load_pem_x509_certificate(certificate).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert f"agentmatrix-webhook.{OTHER}.svc" in names.value.get_values_for_type(x509.DNSName)


def test_image_values_reach_every_container_and_the_driver_flag() -> None:
    objects = helm_rendered(
        "--set", "image.repository=example.org/am", "--set", "image.tag=9.9",
        "--set", "image.pullPolicy=Always", "--set", "driverImage.repository=example.org/runner",
    )  # fmt: skip
    for container in containers(objects):
        assert container["image"] == "example.org/am:9.9"
        assert container["imagePullPolicy"] == "Always"
    (operator,) = [c for c in containers(objects) if c["name"] == "operator"]
    (driver,) = [e["value"] for e in operator["env"] if e["name"] == "AGENTMATRIX_DRIVER_IMAGE"]
    assert driver == "example.org/runner:9.9"  # its tag follows the image's unless set
    defaults = helm_rendered()
    (operator,) = [c for c in containers(defaults) if c["name"] == "operator"]
    (driver,) = [e["value"] for e in operator["env"] if e["name"] == "AGENTMATRIX_DRIVER_IMAGE"]
    assert driver == operator["image"] == "agentmatrix:0.1.0"


def test_placement_values_reach_every_pod() -> None:
    objects = helm_rendered(
        "--set", "nodeSelector.disk=ssd", "--set", "tolerations[0].key=dedicated",
        "--set", "tolerations[0].operator=Exists",
    )  # fmt: skip
    pods = [o["spec"]["template"]["spec"] for o in objects if o["kind"] == "Deployment"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["nodeSelector"] == {"disk": "ssd"}
        assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]


def test_monitoring_objects_render_only_where_their_api_exists() -> None:
    kinds = {o["kind"] for o in helm_rendered()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    kinds = {o["kind"] for o in helm_rendered(*MONITORING_APIS)}
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds
    kinds = {o["kind"] for o in helm_rendered(*MONITORING_APIS, "--set", "monitoring.enabled=false")}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}


def test_a_given_client_ca_is_trusted_and_no_client_certificate_is_made(tmp_path: Path) -> None:
    ca = pki.create_ca(tmp_path, "client-ca")
    objects = helm_rendered("--set-file", f"webhook.clientCA={ca.cert}")
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    assert (
        base64.b64decode(secrets["agentmatrix-webhook-client-ca"]["data"]["ca.crt"]) == ca.cert.read_bytes()
    )
    assert "agentmatrix-apiserver-webhook-client" not in secrets


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("webhook.clientAuth=maybe", "/webhook/clientAuth"),
        ("webhook.replicas=0", "/webhook/replicas"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("certificates=letsencrypt", "/certificates"),
        ("webhook.clientCA=not-a-certificate", "/webhook/clientCA"),
        ("monitoring.enabled=maybe", "/monitoring/enabled"),
        ("imagee.tag=1", "'imagee' not allowed"),
    ],
)
def test_bad_values_are_refused_naming_the_field(setting: str, field: str) -> None:
    rendered = helm_template("--set", setting)
    assert rendered.returncode != 0
    assert field in rendered.stderr, rendered.stderr
