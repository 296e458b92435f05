"""`helm install` on the real-node cluster: the operator and the webhook run as pods, an
evaluation applied with kubectl runs to its results, Prometheus scrapes both; `helm upgrade`
keeps the webhook's certificate; `helm uninstall` leaves nothing behind. One install for the
module, its tests in order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agentmatrix.cluster import binaries
from tests.deploy.test_deploy import CHART, DEPLOY, helm
from tests.realnode import installed
from tests.realnode.conftest import RealCluster
from tests.realnode.installed import SYSTEM

pytestmark = pytest.mark.realnode

RELEASE = "agentmatrix"
LOCAL_NODE_VALUES = DEPLOY / "helm" / "values-local-node.yaml"


def helm_command(real: RealCluster, *args: str) -> list[str]:
    return [helm(), f"--kubeconfig={real.cluster.kubeconfig}", "--namespace", SYSTEM, *args]


def install_args(real: RealCluster, *extra: str) -> list[str]:
    return [
        RELEASE, str(CHART), "-f", str(LOCAL_NODE_VALUES),
        "--set-file", f"webhook.clientCA={real.cluster.webhook_client_ca}",
        "--wait", "--timeout", "5m", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def release(real_cluster: RealCluster) -> Iterator[RealCluster]:
    installed.import_agent_image(real_cluster.cluster, binaries.find().kubectl)
    installed.run(*helm_command(real_cluster, "install", "--create-namespace", *install_args(real_cluster)))
    yield real_cluster
    installed.run(*helm_command(real_cluster, "uninstall", RELEASE, "--wait", "--ignore-not-found"))
    real_cluster.cluster.kubectl("delete", "namespace", SYSTEM, "--ignore-not-found", timeout=180)


def test_helm_install_runs_an_evaluation_scraped_by_prometheus(release: RealCluster, tmp_path: Path) -> None:
    cluster = release.cluster
    for name in ("agentmatrix-operator", "agentmatrix-webhook"):
        (pod, *_) = installed.pods(cluster, name)
        assert pod["spec"]["nodeName"] == "agentmatrix-node"
    body = installed.run_evaluation(cluster, "helm-installed")
    installed.assert_the_agent_was_measured(body)
    installed.assert_prometheus_scrapes(cluster, tmp_path, "helm-installed")
    replayed = installed.run_evaluation(cluster, "helm-replayed", replay=True)
    installed.assert_the_agent_was_measured(replayed)
    (trial,) = replayed["status"]["trials"]
    assert trial["steps"] >= 2, trial  # both commands ran (in the shell Pod, by exec)


def test_helm_upgrade_keeps_the_webhook_certificate(release: RealCluster) -> None:
    cluster = release.cluster
    served = installed.served_certificate(cluster)
    secret = installed.secret_data(cluster, "agentmatrix-webhook-tls")
    bundles = installed.ca_bundles(cluster)
    assert bundles == {secret["ca.crt"]}
    installed.run(*helm_command(release, "upgrade", *install_args(release, "--set", "webhook.replicas=1")))
    webhook = json.loads(
        cluster.kubectl("get", "deployment", "agentmatrix-webhook", "-n", SYSTEM, "-o", "json").stdout
    )
    assert webhook["spec"]["replicas"] == 1  # the changed value took effect
    assert installed.secret_data(cluster, "agentmatrix-webhook-tls") == secret
    assert installed.ca_bundles(cluster) == bundles
    assert installed.served_certificate(cluster) == served
    body = installed.run_evaluation(cluster, "helm-upgraded")
    installed.assert_the_agent_was_measured(body)


def test_helm_uninstall_leaves_nothing_behind(release: RealCluster) -> None:
    cluster = release.cluster
    manifest = installed.run(*helm_command(release, "get", "manifest", RELEASE)).stdout
    objects = [o for o in yaml.safe_load_all(manifest) if o]
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Secret", "ValidatingWebhookConfiguration", "ClusterRole"} <= kinds
    installed.delete_evaluations(cluster)
    installed.run(*helm_command(release, "uninstall", RELEASE, "--wait"))
    assert installed.wait_gone(cluster, installed.kind_names(objects, namespaced=True), SYSTEM) == []
    assert installed.wait_gone(cluster, installed.kind_names(objects, namespaced=False), None) == []
    assert installed.labelled_leftovers(cluster) == []
    kinds_to_list = "all,pvc,secrets,configmaps,serviceaccounts,roles,rolebindings"
    left = cluster.kubectl("get", kinds_to_list, "-n", SYSTEM, "-o", "name")
    # What Kubernetes itself puts in every namespace is all that is left in the release's.
    assert sorted(left.stdout.split()) == ["configmap/kube-root-ca.crt", "serviceaccount/default"]
