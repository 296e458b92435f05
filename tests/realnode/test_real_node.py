"""A real node: containers run, kubectl logs/exec reach them, pods reach the API server, and
`cluster down` leaves the host as it found it. The last test stops the cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentmatrix.cluster import controlplane, images, node_layout
from tests.realnode import host_state
from tests.realnode.conftest import RealCluster

pytestmark = pytest.mark.realnode


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def namespace(real_cluster: RealCluster) -> Iterator[str]:
    name = f"rn-{uuid.uuid4().hex[:8]}"
    real_cluster.cluster.kubectl("create", "namespace", name)
    yield name
    real_cluster.cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def real_pod(name: str, image: str, command: list[str] | None = None) -> dict[str, object]:
    container: dict[str, object] = {"name": "main", "image": image, "imagePullPolicy": "Never"}
    if command:
        container["command"] = command
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [container],
            "tolerations": [node_layout.NODE_TOLERATION],
            "nodeSelector": node_layout.NODE_SELECTOR,
            "terminationGracePeriodSeconds": 1,
        },
    }


def pod_phase(cluster: controlplane.LocalCluster, namespace: str, name: str) -> str:
    out = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False)
    return out.stdout.strip()


def test_node_is_ready_with_containerd_beside_the_kwok_nodes(real_cluster: RealCluster) -> None:
    nodes = json.loads(real_cluster.cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert {"kwok-node-0", "kwok-node-1", node_layout.NODE_NAME} <= set(by_name)
    node = by_name[node_layout.NODE_NAME]
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
    assert {"type": "InternalIP", "address": node_layout.GATEWAY} in node["status"]["addresses"]
    assert node["spec"]["taints"][0]["key"] == node_layout.TAINT_KEY
    wide = real_cluster.cluster.kubectl("get", "nodes", "-o", "wide").stdout
    line = next(row for row in wide.splitlines() if row.startswith(node_layout.NODE_NAME))
    assert "Ready" in line and "containerd://" in line
    state = str(real_cluster.cluster.state_dir)
    status = subprocess.run(
        [sys.executable, "-m", "agentmatrix", "cluster", "status", "--state-dir", state],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert "kubelet" in status.stdout and "containerd" in status.stdout


def test_untolerating_pods_stay_on_kwok_nodes(real_cluster: RealCluster, namespace: str) -> None:
    cluster = real_cluster.cluster
    cluster.kubectl(
        "create", "deployment", "fake", "--image=example.invalid/x:1", "--replicas=3", "-n", namespace
    )

    def placed() -> list[str]:
        out = cluster.kubectl("get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].spec.nodeName}")
        return out.stdout.split()

    wait_for(lambda: len(placed()) == 3, what="3 scheduled pods")
    assert all(node.startswith("kwok-node-") for node in placed())


def test_service_pod_runs_and_answers_logs_and_exec(real_cluster: RealCluster, namespace: str) -> None:
    cluster = real_cluster.cluster
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(real_pod("web", images.SERVICE_IMAGE))
    )
    wait_for(lambda: pod_phase(cluster, namespace, "web") == "Running", what="the service pod Running")
    fetched = cluster.kubectl(
        "exec",
        "web",
        "-n",
        namespace,
        "--",
        "wget",
        "-qO-",
        f"http://127.0.0.1:{images.SERVICE_PORT}/healthz",
    )
    assert fetched.stdout == "ok\n"
    user = cluster.kubectl("exec", "web", "-n", namespace, "--", "id", "-u", check=False)
    assert user.stdout.strip() == "65532", user
    wait_for(
        lambda: "response:200" in cluster.kubectl("logs", "web", "-n", namespace).stdout,
        what="httpd's log line for the request in kubectl logs",
    )
    pod = json.loads(cluster.kubectl("get", "pod", "web", "-n", namespace, "-o", "json").stdout)
    assert pod["spec"]["nodeName"] == node_layout.NODE_NAME
    assert pod["status"]["podIP"].startswith(node_layout.POD_SUBNET.rsplit(".", 1)[0] + ".")


def run_to_end(cluster: controlplane.LocalCluster, namespace: str, pod: dict[str, object]) -> str:
    """Apply a run-once pod, wait for its end, and return its log (asserting it succeeded)."""
    pod["spec"]["restartPolicy"] = "Never"  # type: ignore[index]
    name = str(pod["metadata"]["name"])  # type: ignore[index]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
    wait_for(lambda: pod_phase(cluster, namespace, name) in ("Succeeded", "Failed"), what=f"{name}'s end")
    logs = cluster.kubectl("logs", name, "-n", namespace).stdout
    assert pod_phase(cluster, namespace, name) == "Succeeded", logs
    return logs


def test_pods_reach_the_api_server_through_in_cluster_config(
    real_cluster: RealCluster, namespace: str
) -> None:
    """kubectl in the runner image, with nothing but the `kubernetes` Service's environment and the
    ServiceAccount's projected token and CA (it verifies the API server's certificate)."""
    script = "kubectl auth whoami -o jsonpath='{.status.userInfo.username}'"
    pod = real_pod("whoami", images.RUNNER_IMAGE, ["sh", "-c", script])
    logs = run_to_end(real_cluster.cluster, namespace, pod)
    assert logs == f"system:serviceaccount:{namespace}:default"


def test_runner_image_holds_exactly_the_locked_packages(real_cluster: RealCluster, namespace: str) -> None:
    script = (
        "import importlib.metadata as m; "
        "print('\\n'.join(sorted(d.metadata['Name'].lower().replace('_', '-') + '==' + d.version "
        "for d in m.distributions())))"
    )
    pod = real_pod("packages", images.AGENTMATRIX_IMAGE, ["python", "-c", script])
    installed = set(run_to_end(real_cluster.cluster, namespace, pod).split())
    lock = (Path(__file__).resolve().parents[2] / images.LOCK_FILE).read_text().splitlines()
    locked = {line.split(" ")[0].replace("_", "-") for line in lock if line and not line.startswith("#")}
    assert installed == locked | {images.PROJECT_REQUIREMENT}


def test_pods_reach_nothing_else_on_the_host(real_cluster: RealCluster, namespace: str) -> None:
    cluster = real_cluster.cluster
    ports = json.loads((cluster.state_dir / "cluster.json").read_text())["ports"]

    def probe(address: str, port: int) -> str:
        connect = f"nc -w 3 {address} {port} </dev/null 2>/dev/null"
        return f"if {connect}; then echo {port}:open; else echo {port}:closed; fi"

    checks = [probe(node_layout.GATEWAY, ports["apiserver"]), probe(node_layout.GATEWAY, ports["etcd"])]
    checks.append(probe(node_layout.KUBERNETES_SERVICE_IP, 443))
    pod = real_pod("probe", images.SERVICE_IMAGE, ["/bin/sh", "-c", "; ".join(checks)])
    logs = run_to_end(cluster, namespace, pod)
    assert logs.split() == [f"{ports['apiserver']}:open", f"{ports['etcd']}:closed", "443:open"]


def test_refuses_without_root_in_one_line() -> None:
    tmp_path = Path(tempfile.mkdtemp(prefix="agentmatrix-nobody-"))
    tmp_path.chmod(0o777)  # the unprivileged user may use it, under /tmp that it can reach
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    command = [sys.executable, "-m", "agentmatrix", "cluster", "up", "--real-node"]
    result = subprocess.run(
        [*nobody, *command, "--state-dir", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(tmp_path)},
        timeout=60,
    )
    assert result.returncode == 1
    (message,) = result.stderr.splitlines()
    assert "a real node needs root" in message and "sudo agentmatrix cluster up --real-node" in message
    assert not (tmp_path / "c").exists()
    shutil.rmtree(tmp_path)


def test_down_leaves_the_host_as_it_found_it(real_cluster: RealCluster) -> None:
    """Runs after every other real-node test (see conftest): stops the cluster, then compares."""
    stopped = controlplane.down(real_cluster.cluster.state_dir)
    assert {"kubelet", "containerd", "kube-apiserver", "etcd"} <= set(stopped)
    after = host_state.snapshot()
    assert host_state.differences(real_cluster.host_before, after) == {}
