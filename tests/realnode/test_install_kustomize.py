"""`kubectl apply -k` on the real-node cluster (deploy/ through the local-node overlay, which adds
the node's placement and image names): the operator and the webhook run as pods, an evaluation
applied with kubectl runs to its results, Prometheus scrapes both; `kubectl delete -k` leaves
nothing behind."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmatrix.cluster import binaries
from tests.deploy.test_deploy import DEPLOY, documents
from tests.realnode import installed
from tests.realnode.conftest import RealCluster
from tests.realnode.installed import SYSTEM

pytestmark = pytest.mark.realnode

OVERLAY = DEPLOY / "overlays" / "local-node"


@pytest.fixture(scope="module")
def applied(real_cluster: RealCluster) -> Iterator[RealCluster]:
    cluster = real_cluster.cluster
    installed.import_agent_image(cluster, binaries.find().kubectl)
    cluster.kubectl("create", "namespace", SYSTEM)
    # The webhook trusts the CA of the local API server's client certificate; the certificate Job
    # keeps a client CA Secret it finds.
    cluster.kubectl(
        "create", "secret", "generic", "agentmatrix-webhook-client-ca", "-n", SYSTEM,
        f"--from-file=ca.crt={cluster.webhook_client_ca}",
    )  # fmt: skip
    cluster.kubectl("apply", "-k", str(OVERLAY), "--server-side", timeout=120)
    done = cluster.kubectl("wait", "--for=condition=Complete", "job/agentmatrix-webhook-certs", "-n", SYSTEM,
                           "--timeout=180s", timeout=190, check=False)  # fmt: skip
    if done.returncode != 0:
        logs = cluster.kubectl("logs", "job/agentmatrix-webhook-certs", "-n", SYSTEM, check=False)
        pytest.fail(f"the certificate Job did not complete: {done.stderr}\n{logs.stdout}{logs.stderr}")
    for deployment in ("agentmatrix-operator", "agentmatrix-webhook"):
        cluster.kubectl("rollout", "status", f"deployment/{deployment}", "-n", SYSTEM,
                        "--timeout=300s", timeout=310)  # fmt: skip
    yield real_cluster
    cluster.kubectl("delete", "replicationevals", "--all", "-n", installed.EVALS, "--timeout=60s",
                    timeout=70, check=False)  # fmt: skip
    cluster.kubectl(
        "delete", "-k", str(OVERLAY), "--ignore-not-found", "--wait=false", timeout=120, check=False
    )


def test_kustomize_apply_runs_an_evaluation_scraped_by_prometheus(
    applied: RealCluster, tmp_path: Path
) -> None:
    cluster = applied.cluster
    body = installed.run_evaluation(cluster, "kustomize-applied")
    installed.assert_the_agent_was_measured(body)
    installed.assert_the_agent_was_measured(
        installed.run_evaluation(cluster, "kustomize-replayed", replay=True)
    )
    installed.assert_prometheus_scrapes(cluster, tmp_path, "kustomize-applied")
    # The Job kept the client CA it found: the webhook trusts the local API server's.
    ca = installed.secret_data(cluster, "agentmatrix-webhook-client-ca")["ca.crt"]
    assert base64.b64decode(ca) == cluster.webhook_client_ca.read_bytes()


def test_kustomize_delete_leaves_nothing_behind(applied: RealCluster) -> None:
    cluster = applied.cluster
    rendered = documents(cluster.kubectl("kustomize", str(OVERLAY)).stdout)
    cluster_wide = installed.kind_names(rendered, namespaced=False)
    assert {"Namespace/agentmatrix-system", "ValidatingWebhookConfiguration/agentmatrix-webhook"} <= set(
        cluster_wide
    )
    installed.delete_evaluations(cluster)
    cluster.kubectl("delete", "-k", str(OVERLAY), "--wait=true", timeout=300)
    # The namespace's objects go with it; the Job's Secrets are not in the manifests, but there.
    assert installed.wait_gone(cluster, cluster_wide, None, timeout=180) == []
    assert installed.labelled_leftovers(cluster) == []
