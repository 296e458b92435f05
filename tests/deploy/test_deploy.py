"""deploy/: the kustomize base and the Helm chart are accepted by a real API server, agree with
each other, and give the operator and webhook only the permissions they need."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmatrix.cluster import binaries, controlplane
from agentmatrix.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "agentmatrix"
SYSTEM = "agentmatrix-system"
OPERATOR = f"system:serviceaccount:{SYSTEM}:agentmatrix-operator"
WEBHOOK = f"system:serviceaccount:{SYSTEM}:agentmatrix-webhook"
CERTS_JOB = f"system:serviceaccount:{SYSTEM}:agentmatrix-webhook-certs"


def helm() -> str:
    found = shutil.which("helm") or str(binaries.cache_dir() / "tools" / "helm")
    if not Path(found).exists():
        pytest.fail("helm is missing: scripts/setup.sh builds it into the cache")
    return found


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def kustomized(cluster: controlplane.LocalCluster, path: Path = DEPLOY) -> list[dict[str, Any]]:
    return documents(cluster.kubectl("kustomize", str(path)).stdout)


def helm_template(*args: str) -> subprocess.CompletedProcess[str]:
    command = [helm(), "template", "agentmatrix", str(CHART), "--include-crds", "--kube-version", "1.36.3"]
    return subprocess.run([*command, "--namespace", SYSTEM, *args], capture_output=True, text=True)


def helm_rendered(*args: str) -> list[dict[str, Any]]:
    rendered = helm_template(*args)
    assert rendered.returncode == 0, rendered.stderr
    return documents(rendered.stdout)


# Objects only one of the two installs has: kustomize makes the release namespace and a Job that
# makes the webhook's certificates in the cluster; the chart makes them itself (kept on upgrade).
KUSTOMIZE_ONLY_KINDS = ("Namespace",)
SELF_SIGNED_JOB = "agentmatrix-webhook-certs"


def comparable_kustomize(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        key(o): o
        for o in objects
        if o["kind"] not in KUSTOMIZE_ONLY_KINDS and o["metadata"]["name"] != SELF_SIGNED_JOB
    }


def comparable_helm(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for o in objects:
        if o["kind"] == "Secret":
            continue
        for hook in o.get("webhooks", []):
            hook["clientConfig"].pop("caBundle", None)
        out[key(o)] = o
    return out


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


# Stand-ins for the CRDs of the Prometheus Operator and cert-manager, which this cluster lacks:
# they register the same groups and kinds (schema left open) so that the API server can accept
# agentmatrix's ServiceMonitor, PrometheusRule, Certificate and Issuer as it would with the real ones.
def stand_in_crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


MONITORING_APIS = (
    "--api-versions",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions",
    "monitoring.coreos.com/v1/PrometheusRule",
)

STAND_INS = [
    stand_in_crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
    stand_in_crd("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
    stand_in_crd("cert-manager.io", "Certificate", "certificates"),
    stand_in_crd("cert-manager.io", "Issuer", "issuers"),
]


@pytest.fixture(scope="module")
def installed(cluster: controlplane.LocalCluster) -> Iterator[controlplane.LocalCluster]:
    """deploy/ applied for real, except the webhook configuration (it would send this cluster's
    sandbox requests to a webhook that cannot run on kwok)."""
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(STAND_INS))
    for crd in STAND_INS:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}")
    objects = [o for o in kustomized(cluster) if o["kind"] != "ValidatingWebhookConfiguration"]
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objects))
    yield cluster
    cluster.kubectl(
        "delete",
        "-f",
        "-",
        "--wait=false",
        "--ignore-not-found",
        input=yaml.safe_dump_all([o for o in objects if o["kind"] != "CustomResourceDefinition"]),
        check=False,
    )


@pytest.mark.cluster
def test_kustomize_and_helm_render_the_same_objects(cluster: controlplane.LocalCluster) -> None:
    from_kustomize = comparable_kustomize(kustomized(cluster))
    from_helm = comparable_helm(helm_rendered())
    assert from_kustomize.keys() == from_helm.keys()
    for k, obj in from_kustomize.items():
        assert from_helm[k] == obj, (
            f"{k} differs between deploy/ and the Helm chart; run scripts/sync_chart.py"
        )
    with_monitoring = DEPLOY / "components" / "monitoring"
    monitoring_helm = helm_rendered(*MONITORING_APIS)
    for name in ("servicemonitor.yaml", "prometheus-rule.yaml"):
        (obj,) = documents((with_monitoring / name).read_text())
        assert comparable_helm(monitoring_helm)[key(obj)] == obj


@pytest.mark.cluster
def test_cert_manager_variants_agree(cluster: controlplane.LocalCluster) -> None:
    from_kustomize = comparable_kustomize(kustomized(cluster, DEPLOY / "overlays" / "cert-manager"))
    from_helm = comparable_helm(helm_rendered("--set", "certificates=cert-manager"))
    assert from_kustomize == from_helm
    hook = from_helm[("ValidatingWebhookConfiguration", "", "agentmatrix-webhook")]
    assert (
        hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{SYSTEM}/agentmatrix-webhook"
    )
    assert ("Job", SYSTEM, "agentmatrix-webhook-certs") not in from_kustomize
    # auto: cert-manager where its API exists, else the chart's own certificates.
    auto = {key(o): o for o in helm_rendered("--api-versions", "cert-manager.io/v1/Certificate")}
    assert ("Certificate", SYSTEM, "agentmatrix-webhook") in auto
    assert ("Secret", SYSTEM, "agentmatrix-webhook-tls") not in auto
    plain = {key(o): o for o in helm_rendered()}
    assert ("Secret", SYSTEM, "agentmatrix-webhook-tls") in plain
    assert not [k for k in plain if k[0] in ("Certificate", "Issuer")]


@pytest.mark.cluster
def test_api_server_accepts_kustomize_and_helm_server_side(installed: controlplane.LocalCluster) -> None:
    cluster = installed
    applied = cluster.kubectl("apply", "-k", str(DEPLOY), "--server-side", "--dry-run=server")
    assert "serverside-applied" in applied.stdout
    assert "validatingwebhookconfiguration.admissionregistration.k8s.io/agentmatrix-webhook" in applied.stdout
    chart = yaml.safe_dump_all(helm_rendered("--set", "certificates=cert-manager"))
    applied = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-", input=chart
    )
    assert "certificate.cert-manager.io/agentmatrix-webhook serverside-applied" in applied.stdout
    deployments = cluster.kubectl("get", "deployments", "-n", SYSTEM, "-o", "name").stdout.split()
    assert sorted(deployments) == [
        "deployment.apps/agentmatrix-operator",
        "deployment.apps/agentmatrix-webhook",
    ]


def can_i(cluster: controlplane.LocalCluster, user: str, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *args, f"--as={user}", check=False)
    return result.stdout.strip() == "yes"


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("user", "request_args"),
    [
        (WEBHOOK, ("create", "deployments", "-n", "default")),
        (WEBHOOK, ("patch", "deployments", "--subresource=scale", "-n", "default")),
        (WEBHOOK, ("get", "secrets", "-n", SYSTEM)),
        (WEBHOOK, ("patch", "namespaces")),
        (WEBHOOK, ("update", "validatingwebhookconfigurations")),
        (WEBHOOK, ("list", "replicationevals.agentmatrix.dev", "-A")),
        (OPERATOR, ("list", "secrets", "-A")),
        (OPERATOR, ("delete", "validatingwebhookconfigurations", "agentmatrix-webhook")),
        (OPERATOR, ("create", "clusterroles")),
        (OPERATOR, ("create", "clusterrolebindings")),
        (OPERATOR, ("delete", "customresourcedefinitions")),
        (OPERATOR, ("delete", "nodes")),
        (OPERATOR, ("create", "pods", "--subresource=exec", "-n", "default")),
        (OPERATOR, ("create", "pods/agent-shell", "--subresource=exec", "-n", "default")),
        (OPERATOR, ("bind", "clusterroles/cluster-admin")),
        (CERTS_JOB, ("get", "secrets/agentmatrix-operator-token", "-n", SYSTEM)),
        (CERTS_JOB, ("delete", "secrets/agentmatrix-webhook-client-ca", "-n", SYSTEM)),
        (CERTS_JOB, ("delete", "secrets/agentmatrix-webhook-tls", "-n", SYSTEM)),
    ],
)
def test_service_accounts_cannot_do_what_they_do_not_need(
    installed: controlplane.LocalCluster, user: str, request_args: tuple[str, ...]
) -> None:
    assert not can_i(installed, user, *request_args)


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("user", "request_args"),
    [
        (WEBHOOK, ("watch", "namespaces")),
        (WEBHOOK, ("list", "deployments", "-A")),
        (OPERATOR, ("patch", "replicationevals.agentmatrix.dev", "--subresource=status", "-n", "default")),
        (OPERATOR, ("create", "namespaces")),
        (OPERATOR, ("create", "roles", "-n", "default")),
        (OPERATOR, ("create", "serviceaccounts", "--subresource=token", "-n", "default")),
        (OPERATOR, ("bind", "clusterroles/agentmatrix-shell-exec")),
        (OPERATOR, ("deletecollection", "pods", "-n", "default")),
        (CERTS_JOB, ("create", "secrets", "-n", SYSTEM)),
        (CERTS_JOB, ("get", "secrets/agentmatrix-webhook-client-ca", "-n", SYSTEM)),
        (CERTS_JOB, ("delete", "secrets/agentmatrix-apiserver-webhook-client", "-n", SYSTEM)),
    ],
)
def test_service_accounts_can_do_their_jobs(
    installed: controlplane.LocalCluster, user: str, request_args: tuple[str, ...]
) -> None:
    assert can_i(installed, user, *request_args)


def scenario_permissions() -> set[tuple[str, str, str | None]]:
    """(verb, resource as kubectl names it, resourceName) of every rule of every scenario's Roles."""
    from agentmatrix.scenarios import build

    wanted: set[tuple[str, str, str | None]] = set()
    for name in SCENARIOS:
        scenario = build({"name": name})
        for rule in scenario.agent_rules() + scenario.operations_rules():
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    qualified = f"{resource.split('/')[0]}.{group}" if group else resource.split("/")[0]
                    if "/" in resource:
                        qualified += f" --subresource={resource.split('/', 1)[1]}"
                    for verb in rule["verbs"]:
                        for resource_name in rule.get("resourceNames") or [None]:
                            wanted.add((verb, qualified, resource_name))
    return wanted


@pytest.mark.cluster
def test_operator_holds_every_permission_it_grants_an_agent(installed: controlplane.LocalCluster) -> None:
    """RBAC lets the operator grant the scenarios' Roles only if it holds each permission itself."""
    missing = []
    for verb, resource, resource_name in sorted(scenario_permissions(), key=str):
        kind, *subresource = resource.split(" ")
        target = f"{kind}/{resource_name}" if resource_name else kind
        if not can_i(installed, OPERATOR, verb, target, *subresource, "-n", "default"):
            missing.append(f"{verb} {resource} {resource_name or ''}".strip())
    assert missing == []


@pytest.mark.cluster
@pytest.mark.parametrize("scenario_name", sorted(SCENARIOS))
def test_the_operators_service_account_sets_up_a_sandbox(
    installed: controlplane.LocalCluster, scenario_name: str
) -> None:
    """As the installed operator (its ServiceAccount, not cluster-admin): Roles it grants, and their
    bindings, which the API server checks against Roles that must exist by then; the pod driver's
    exec identity too."""
    from agentmatrix.api.replicationeval import ArmSpec
    from agentmatrix.kube import Kube
    from agentmatrix.operator import sandbox_lifecycle, sandbox_objects
    from agentmatrix.operator.drivers.pod_objects import exec_access_objects
    from agentmatrix.scenarios import build

    namespace = f"rbac-{scenario_name}"
    installed.kubectl("create", "namespace", namespace)
    kubeconfig = installed.service_account_kubeconfig(SYSTEM, "agentmatrix-operator")

    async def set_up() -> None:
        kube = Kube.from_kubeconfig(kubeconfig)
        try:
            await sandbox_lifecycle.create_sandbox(
                kube,
                {"metadata": {"name": namespace}},
                scenario=build({"name": scenario_name}),
                arm=ArmSpec(name="baseline"),
                settings=sandbox_objects.SandboxSettings(),
            )
            await sandbox_lifecycle.create_objects(kube, exec_access_objects(namespace))
        finally:
            await kube.close()

    try:
        asyncio.run(set_up())
        bindings = installed.kubectl("get", "rolebindings", "-n", namespace, "-o", "name").stdout.split()
        assert len(bindings) == 3
    finally:
        installed.kubectl("delete", "namespace", namespace, "--wait=false")


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).with_name("hadolint"))
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_deployed_webhook_configuration_is_the_generated_one() -> None:
    from agentmatrix.measurement import admission_config
    from agentmatrix.measurement.model import Mode

    generated = admission_config.webhook_configuration(Mode.OBSERVE, admission_config.ClientTarget())
    on_disk = yaml.safe_load((DEPLOY / "base" / "webhook-configuration.yaml").read_text())
    assert on_disk == generated, (
        "regenerate with `agentmatrix webhook config > deploy/base/webhook-configuration.yaml`"
    )


def test_operator_reads_the_ledger_file_the_webhook_writes(cluster: controlplane.LocalCluster) -> None:
    """The operator scores from the webhook's ledger: both must open the same file on the same
    volume, on one node (the volume is ReadWriteOnce and SQLite's locks are per host)."""
    deployments = {o["metadata"]["name"]: o for o in kustomized(cluster) if o["kind"] == "Deployment"}

    def ledger_of(name: str) -> tuple[str, str]:
        pod = deployments[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        (path,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--ledger=")]
        (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        return path, volume["persistentVolumeClaim"]["claimName"]

    assert ledger_of("agentmatrix-operator") == ledger_of("agentmatrix-webhook")
    claims = {o["metadata"]["name"]: o for o in kustomized(cluster) if o["kind"] == "PersistentVolumeClaim"}
    assert claims[ledger_of("agentmatrix-webhook")[1]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    for name in ("agentmatrix-operator", "agentmatrix-webhook"):
        affinity = deployments[name]["spec"]["template"]["spec"]["affinity"]["podAffinity"]
        (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "agentmatrix-webhook"}


def webhook_container(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (deployment,) = [
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "agentmatrix-webhook"
    ]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def client_auth(container: dict[str, Any]) -> str:
    (value,) = [e["value"] for e in container["env"] if e["name"] == "AGENTMATRIX_WEBHOOK_CLIENT_AUTH"]
    return str(value)


@pytest.mark.cluster
def test_the_webhook_requires_the_api_servers_client_certificate_unless_relaxed(
    cluster: controlplane.LocalCluster,
) -> None:
    for objects in (
        kustomized(cluster),
        kustomized(cluster, DEPLOY / "overlays" / "cert-manager"),
        helm_rendered(),
    ):
        pod, container = webhook_container(objects)
        assert client_auth(container) == "required"
        (ca_arg,) = [a for a in container["args"] if a.startswith("--client-ca=")]
        (mount,) = [
            m
            for m in container["volumeMounts"]
            if ca_arg.removeprefix("--client-ca=").startswith(m["mountPath"])
        ]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        # Only the CA's certificate reaches the webhook, never a key.
        assert volume["secret"]["secretName"] == "agentmatrix-webhook-client-ca"
        assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
        # Probes and Prometheus use the plain-HTTP probe port: they hold no client certificate.
        assert container["readinessProbe"]["httpGet"]["port"] == "metrics"
        assert "--probe-port=8080" in container["args"]
    _, relaxed = webhook_container(helm_rendered("--set", "webhook.clientAuth=none"))
    assert client_auth(relaxed) == "none"


@pytest.mark.cluster
def test_cert_manager_issues_the_api_servers_client_certificate_from_its_own_ca(
    cluster: controlplane.LocalCluster,
) -> None:
    objects = {key(o): o for o in kustomized(cluster, DEPLOY / "overlays" / "cert-manager")}
    client = objects[("Certificate", SYSTEM, "agentmatrix-apiserver-webhook-client")]["spec"]
    assert "client auth" in client["usages"] and "server auth" not in client["usages"]
    issuer = objects[("Issuer", SYSTEM, client["issuerRef"]["name"])]["spec"]
    ca = objects[("Certificate", SYSTEM, "agentmatrix-webhook-client-ca")]["spec"]
    assert (
        ca["isCA"] is True
        and issuer["ca"]["secretName"] == ca["secretName"] == "agentmatrix-webhook-client-ca"
    )
    serving = objects[("Certificate", SYSTEM, "agentmatrix-webhook")]["spec"]
    assert serving["issuerRef"]["name"] != client["issuerRef"]["name"]  # the serving CA signs no client


def test_the_shipped_api_server_files_are_what_the_local_control_plane_uses() -> None:
    from agentmatrix.cluster import admission

    apiserver = DEPLOY / "apiserver"
    configuration = yaml.safe_load((apiserver / "admission-configuration.yaml").read_text())
    kubeconfig_path = "/etc/kubernetes/agentmatrix/webhook-client.kubeconfig"
    assert configuration == admission.admission_configuration(kubeconfig_path)
    kubeconfig = yaml.safe_load((apiserver / "webhook-client.kubeconfig").read_text())
    (user,) = kubeconfig["users"]
    assert user["name"] == f"agentmatrix-webhook.{SYSTEM}.svc"  # the Service the configuration calls
    assert set(user["user"]) == {"client-certificate", "client-key"}
