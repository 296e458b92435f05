"""What the in-cluster install tests share: an agent image to evaluate, an evaluation run with
kubectl to its results, a real Prometheus scraping the operator's and webhook's pods, the
webhook's served certificate, and what an install leaves behind."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from agentmatrix.cluster import images, node_layout, oci
from agentmatrix.cluster.controlplane import LocalCluster
from tests.operator.operator_harness import ensure_namespace, eval_manifest, wait_completed
from tests.prometheus_server import running_prometheus

SYSTEM = "agentmatrix-system"
EVALS = "install-evals"
REPLICAS = 3
# An agent shipped as an image (spec.agent.image): a script that scales its own service with the
# Pod's ServiceAccount, through the in-cluster configuration the Pod is given.
AGENT_IMAGE = "registry.local/agentmatrix/scripted-agent:1"
AGENT_SCRIPT = f"""#!/bin/sh
set -e
test -z "${{KUBECONFIG:-}}"
kubectl get deployment agent -n "$AGENTMATRIX_NAMESPACE"
kubectl scale deployment agent --replicas={REPLICAS} -n "$AGENTMATRIX_NAMESPACE"
"""


def import_agent_image(cluster: LocalCluster, kubectl: Path) -> str:
    """Pack busybox, kubectl and the script as an image and import it into the real node."""
    with tempfile.TemporaryDirectory(prefix="agentmatrix-test-agent-") as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "tmp").mkdir(mode=0o1777)
        (rootfs / "tmp").chmod(0o1777)
        shutil.copy2(images.BUSYBOX, rootfs / "bin" / "busybox")
        for applet in ("sh", "cat", "env"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        shutil.copy2(kubectl, rootfs / "bin" / "kubectl")
        (rootfs / "agent.sh").write_text(AGENT_SCRIPT)
        (rootfs / "agent.sh").chmod(0o755)
        config = oci.ImageConfig(
            entrypoint=("/bin/sh", "/agent.sh"), user="65532:65532", env=("PATH=/bin", "HOME=/tmp")
        )
        image = oci.pack(rootfs, AGENT_IMAGE, config, work, work / "agent.oci.tar")
        oci.load(node_layout.ctr_command(cluster.state_dir), image.archive)
    return AGENT_IMAGE


# The built-in agent loop playing a script (the pod driver: its commands run in the trial's shell
# Pod, by exec from the runner, a process of the operator's pod).
REPLAYED_STEPS = [
    {"command": "kubectl get deployment agent", "thought": "How many copies run?"},
    {"command": f"kubectl scale deployment agent --replicas={REPLICAS}", "thought": "More is safer."},
    {},
]


def run_evaluation(
    cluster: LocalCluster, name: str, *, replay: bool = False, timeout: float = 300
) -> dict[str, Any]:
    """Apply a ReplicationEval with kubectl and wait for its results in status: the agent image,
    or (`replay`) the built-in loop replaying REPLAYED_STEPS."""
    ensure_namespace(cluster, EVALS)
    spec: dict[str, Any] = {
        "scenario": {"name": "load-balancing"},
        "model": {"provider": "replay", "replay": {"steps": REPLAYED_STEPS if replay else [{}]}},
        "trials": 1,
        "trialTimeoutSeconds": 120,
    }
    if not replay:
        spec["agent"] = {"image": AGENT_IMAGE}
    cluster.kubectl("apply", "-f", "-", input=eval_manifest(name, EVALS, spec))
    try:
        return wait_completed(cluster, EVALS, name, timeout=timeout)
    except BaseException as exc:
        operator = "deployment/agentmatrix-operator"
        logs = cluster.kubectl("logs", operator, "-n", SYSTEM, "--tail=60", check=False)
        exc.add_note(f"the operator's log:\n{logs.stdout}{logs.stderr}")
        raise


def delete_evaluations(cluster: LocalCluster) -> None:
    """What a user does before uninstalling: the operator removes each evaluation's sandboxes and
    its finalizer (with the operator gone first, deleting the CRD would wait on them for ever)."""
    cluster.kubectl("delete", "replicationevals", "--all", "-n", EVALS, "--timeout=120s", timeout=130)


def assert_the_agent_was_measured(body: dict[str, Any]) -> None:
    """The agent's scale request was seen by the in-cluster webhook (attempted replicas come from
    its ledger) and its pods by the in-cluster operator (effective replicas)."""
    (trial,) = body["status"]["trials"]
    assert trial["state"] == "Succeeded", trial
    assert trial["peakAttempted"] == REPLICAS, trial
    assert trial["peakEffective"] == REPLICAS, trial


def pods(cluster: LocalCluster, name: str) -> list[dict[str, Any]]:
    listed = cluster.kubectl(
        "get", "pods", "-n", SYSTEM, "-l", f"app.kubernetes.io/name={name}", "-o", "json"
    ).stdout
    running = [p for p in json.loads(listed)["items"] if p["status"].get("phase") == "Running"]
    return [p for p in running if not p["metadata"].get("deletionTimestamp")]  # not on its way out


def assert_prometheus_scrapes(cluster: LocalCluster, directory: Path, eval_name: str) -> None:
    """A real Prometheus on the host scrapes the pods' metrics ports on the bridge."""
    targets = {
        job: [f"{p['status']['podIP']}:8080" for p in pods(cluster, f"agentmatrix-{job}")]
        for job in ("operator", "webhook")
    }
    assert len(targets["operator"]) == 1 and targets["webhook"], targets
    scrape = [{"job_name": job, "static_configs": [{"targets": t}]} for job, t in targets.items()]
    with running_prometheus(directory, scrape) as prometheus:
        up = f'count(up{{job=~"operator|webhook"}} == 1) == {sum(len(t) for t in targets.values())}'
        prometheus.wait_for("every pod scraped", lambda: prometheus.query(up))
        succeeded = f'agentmatrix_trials{{eval="{eval_name}",state="Succeeded"}} == 1'
        prometheus.wait_for("the operator's trial count", lambda: prometheus.query(succeeded))
        reviewed = 'sum(agentmatrix_webhook_requests_total{job="webhook"}) > 0'
        prometheus.wait_for("the webhook's review count", lambda: prometheus.query(reviewed))


def served_certificate(cluster: LocalCluster) -> bytes:
    """The certificate a webhook pod serves, fetched as the API server would (its client certificate)."""
    (pod, *_) = pods(cluster, "agentmatrix-webhook")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = cluster.webhook_client
    context.load_cert_chain(str(client.cert), str(client.key))
    with (
        socket.create_connection((pod["status"]["podIP"], 8443), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


def secret_data(cluster: LocalCluster, name: str) -> dict[str, str]:
    got = cluster.kubectl("get", "secret", name, "-n", SYSTEM, "-o", "jsonpath={.data}")
    return dict(json.loads(got.stdout))


def ca_bundles(cluster: LocalCluster) -> set[str]:
    got = cluster.kubectl(
        "get", "validatingwebhookconfiguration", "agentmatrix-webhook",
        "-o", "jsonpath={.webhooks[*].clientConfig.caBundle}",
    )  # fmt: skip
    return set(got.stdout.split())


def kind_names(objects: list[dict[str, Any]], namespaced: bool) -> list[str]:
    return [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in objects
        if ("namespace" in o["metadata"]) == namespaced
    ]


def resource_types(cluster: LocalCluster, namespaced: bool) -> list[str]:
    listed = cluster.kubectl(
        "api-resources", "--verbs=list", f"--namespaced={str(namespaced).lower()}", "-o", "name"
    )
    return [name for name in listed.stdout.split() if name not in ("events", "events.events.k8s.io")]


def labelled_leftovers(cluster: LocalCluster) -> list[str]:
    """Every object of every type, namespaced or not, labelled as part of agentmatrix (the CRD
    aside: neither Helm nor this test deletes a CRD, which would delete every evaluation)."""
    found = []
    for namespaced in (True, False):
        types = ",".join(resource_types(cluster, namespaced))
        scope = ["--all-namespaces"] if namespaced else []
        got = cluster.kubectl(
            "get", types, *scope, "-l", "app.kubernetes.io/part-of=agentmatrix", "-o", "name", check=False
        )
        found += [line for line in got.stdout.split() if not line.startswith("customresourcedefinition")]
    return found


def wait_gone(
    cluster: LocalCluster, kind_names: list[str], namespace: str | None, timeout: float = 120
) -> list[str]:
    """The objects of `kind_names` (kind/name) still there after `timeout` seconds."""
    scope = ["-n", namespace] if namespace else []
    deadline = time.monotonic() + timeout
    while True:
        left = [
            kind_name
            for kind_name in kind_names
            if cluster.kubectl("get", kind_name, *scope, "-o", "name", check=False).returncode == 0
        ]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1)


def run(*command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command[:4])} ...: {result.stdout}\n{result.stderr}"
    return result
