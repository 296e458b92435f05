"""The local control plane behaves like a real cluster, through real kubectl."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from agentmatrix.cluster import binaries, controlplane, pki, processes
from agentmatrix.cluster.errors import ClusterError

pytestmark = pytest.mark.cluster


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def running_pods(cluster: controlplane.LocalCluster, namespace: str, selector: str) -> list[dict[str, str]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    return [
        {
            "name": p["metadata"]["name"],
            "node": p["spec"].get("nodeName", ""),
            "phase": p["status"].get("phase"),
        }
        for p in json.loads(out)["items"]
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def test_deployment_pods_run_scale_and_are_garbage_collected(
    cluster: controlplane.LocalCluster, sandbox_namespace: str
) -> None:
    ns = sandbox_namespace
    cluster.kubectl("create", "deployment", "web", "--image=example.invalid/web:1", "--replicas=3", "-n", ns)
    wait_for(lambda: len(running_pods(cluster, ns, "app=web")) == 3, what="3 running pods")
    pods = running_pods(cluster, ns, "app=web")
    assert all(p["node"].startswith("kwok-node-") for p in pods), pods

    scaled = cluster.kubectl("scale", "deployment/web", "--replicas=5", "-n", ns)
    assert "scaled" in scaled.stdout
    wait_for(lambda: len(running_pods(cluster, ns, "app=web")) == 5, what="5 running pods")

    cluster.kubectl("delete", "deployment", "web", "-n", ns)
    wait_for(
        lambda: cluster.kubectl("get", "pods", "-n", ns, "-l", "app=web", "-o", "name").stdout.strip() == "",
        what="garbage collection of the deployment's pods",
    )


def test_namespaced_role_is_refused_outside_its_namespace(
    cluster: controlplane.LocalCluster, sandbox_namespace: str
) -> None:
    ns = sandbox_namespace
    cluster.kubectl("create", "serviceaccount", "agent", "-n", ns)
    cluster.kubectl("create", "role", "ops", "--verb=get,list,create", "--resource=deployments", "-n", ns)
    cluster.kubectl("create", "rolebinding", "ops", "--role=ops", f"--serviceaccount={ns}:agent", "-n", ns)
    agent = cluster.service_account_kubeconfig(ns, "agent")

    inside = cluster.kubectl("get", "deployments", "-n", ns, kubeconfig=agent, check=False)
    assert inside.returncode == 0, inside.stderr

    outside = cluster.kubectl("get", "deployments", "-n", "default", kubeconfig=agent, check=False)
    assert outside.returncode != 0
    assert "Forbidden" in outside.stderr and f"system:serviceaccount:{ns}:agent" in outside.stderr

    # The raw API answers 403 too, not just kubectl's wording.
    raw = cluster.kubectl(
        "get", "--raw", "/apis/apps/v1/namespaces/default/deployments", kubeconfig=agent, check=False
    )
    assert "(Forbidden)" in raw.stderr or "403" in raw.stderr


class DenyingWebhook:
    """A tiny admission webhook on 127.0.0.1 (HTTPS) that denies every request it is sent, and
    answers only callers with a client certificate signed by `client_ca`."""

    def __init__(self, cert_dir: Path, client_ca: Path) -> None:
        self.ca, self.leaf = pki.serving_cert_for_localhost(cert_dir, "test-webhook")
        self.client_ca = client_ca
        self.port = processes.free_port()
        self.seen: list[str] = []
        self.callers: set[str] = set()  # common names of the client certificates presented
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None

    async def _review(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        self.callers.update(
            value for rdn in (peer or {}).get("subject", ()) for key, value in rdn if key == "commonName"
        )
        review = await request.json()
        req = review["request"]
        sub = f"/{req['subResource']}" if req.get("subResource") else ""
        self.seen.append(f"{req['operation']} {req['resource']['resource']}{sub}")
        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": req["uid"],
                    "allowed": False,
                    "status": {"code": 403, "message": f"test-webhook says no to {req['operation']}{sub}"},
                },
            }
        )

    def start(self) -> None:
        app = web.Application()
        app.router.add_post("/validate", self._review)
        ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_ctx.load_cert_chain(str(self.leaf.cert), str(self.leaf.key))
        ssl_ctx.verify_mode = ssl.CERT_REQUIRED
        ssl_ctx.load_verify_locations(cafile=str(self.client_ca))
        self._runner = web.AppRunner(app)

        async def go() -> None:
            assert self._runner is not None
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ssl_ctx).start()

        self._loop.run_until_complete(go())
        import threading

        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def denying_webhook(tmp_path: Path, cluster: controlplane.LocalCluster) -> Iterator[DenyingWebhook]:
    hook = DenyingWebhook(tmp_path, cluster.webhook_client_ca)
    hook.start()
    yield hook
    hook.stop()


def test_api_server_calls_a_local_webhook_for_deployments_and_scale_with_its_client_certificate(
    cluster: controlplane.LocalCluster, sandbox_namespace: str, denying_webhook: DenyingWebhook
) -> None:
    ns = sandbox_namespace
    cluster.kubectl("create", "deployment", "web", "--image=example.invalid/web:1", "--replicas=1", "-n", ns)
    name = f"test-deny-{ns}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "deny.test.agentmatrix.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "clientConfig": {
                    "url": f"https://127.0.0.1:{denying_webhook.port}/validate",
                    "caBundle": base64.b64encode(denying_webhook.ca.cert.read_bytes()).decode(),
                },
                "rules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments", "deployments/scale"],
                    }
                ],
            }
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))
    try:
        # Webhook configurations reach the API server's cache asynchronously.
        def denied_scale() -> bool:
            result = cluster.kubectl("scale", "deployment/web", "--replicas=4", "-n", ns, check=False)
            return result.returncode != 0 and "test-webhook says no to UPDATE/scale" in result.stderr

        wait_for(denied_scale, what="the webhook's denial of a scale request")
        created = cluster.kubectl(
            "create", "deployment", "web2", "--image=example.invalid/web:1", "-n", ns, check=False
        )
        assert created.returncode != 0
        assert 'admission webhook "deny.test.agentmatrix.dev" denied the request' in created.stderr
        assert "test-webhook says no to CREATE" in created.stderr
        assert "UPDATE deployments/scale" in denying_webhook.seen
        assert "CREATE deployments" in denying_webhook.seen
        # The AdmissionConfiguration's kubeconfig: the API server presents its own client certificate.
        assert denying_webhook.callers == {"kube-apiserver-webhook-client"}
        replicas = cluster.kubectl("get", "deployment", "web", "-n", ns, "-o", "jsonpath={.spec.replicas}")
        assert replicas.stdout == "1"
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", name, check=False)


def test_second_up_reuses_and_down_stops_everything(
    tmp_path: Path, cluster: controlplane.LocalCluster
) -> None:
    """A second cluster in its own state directory runs beside the session's, is reused, then goes away."""
    state = tmp_path / "second"
    cli = [str(Path(sys.executable).with_name("agentmatrix"))]
    first = subprocess.run(
        [*cli, "cluster", "up", "--state-dir", str(state)], capture_output=True, text=True, timeout=180
    )
    assert first.returncode == 0, first.stderr
    procs = processes.load(state / "processes.json")
    assert {p.name for p in procs} == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    }
    ports = [port for p in procs for port in p.ports]
    assert not set(ports) & {port for p in cluster.procs for port in p.ports}

    second = subprocess.run(
        [*cli, "cluster", "up", "--state-dir", str(state)], capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 0, second.stderr
    assert "reusing the running cluster" in second.stderr
    assert [p.pid for p in processes.load(state / "processes.json")] == [p.pid for p in procs]

    status = subprocess.run(
        [*cli, "cluster", "status", "--state-dir", str(state)], capture_output=True, text=True, timeout=30
    )
    assert status.returncode == 0 and "health: ready" in status.stdout

    down = subprocess.run(
        [*cli, "cluster", "down", "--state-dir", str(state)], capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 0, down.stderr
    assert not any(processes.is_alive(p) for p in procs)
    assert not any(processes.port_listening(port) for port in ports)
    assert not state.exists()
    # The session's cluster was not touched.
    assert all(processes.is_alive(p) for p in cluster.procs)


@pytest.mark.parametrize("command", ["up", "down"])
def test_a_directory_that_is_not_a_cluster_state_is_refused_untouched(tmp_path: Path, command: str) -> None:
    """`--state-dir .` in a project folder must not become `rm -rf .`."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "README.md").write_text("mine\n")
    (project / "src" / "main.py").write_text("print('mine')\n")
    (project / "logs").mkdir()  # a name a cluster also uses
    cli = [str(Path(sys.executable).with_name("agentmatrix"))]
    done = subprocess.run(
        [*cli, "cluster", command, "--state-dir", str(project)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "is not a local cluster's state directory (it holds README.md, src)" in " ".join(
        done.stderr.split()
    )
    assert sorted(p.name for p in project.iterdir()) == ["README.md", "logs", "src"]
    assert (project / "src" / "main.py").read_text() == "print('mine')\n"


def test_service_account_kubeconfig_from_cli(
    cluster: controlplane.LocalCluster, sandbox_namespace: str, tmp_path: Path
) -> None:
    ns = sandbox_namespace
    cluster.kubectl("create", "serviceaccount", "reader", "-n", ns)
    cli = str(Path(sys.executable).with_name("agentmatrix"))
    target = tmp_path / "reader.kubeconfig"
    minted = subprocess.run(
        [
            cli,
            "cluster",
            "kubeconfig",
            "--state-dir",
            str(cluster.state_dir),
            "--service-account",
            f"{ns}/reader",
            "-o",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert minted.returncode == 0, minted.stderr
    who = cluster.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=target)
    assert who.stdout == f"system:serviceaccount:{ns}:reader"


def test_an_up_that_fails_stops_what_it_started_and_retries_a_lost_port(tmp_path: Path) -> None:
    """A component that cannot bind the port picked for it (another program took it in between)
    makes `up` start again on new ports once; when it fails again, nothing `up` started is left
    running, and its logs stay to read."""
    bins = tmp_path / "bin"
    bins.mkdir()
    for name, path in binaries.find().paths.items():
        (bins / name).symlink_to(path)
    (bins / "kube-scheduler").unlink()
    (bins / "kube-scheduler").write_text(
        "#!/bin/sh\necho 'listen tcp: bind: address already in use' >&2\nexit 1\n"
    )
    (bins / "kube-scheduler").chmod(0o755)
    said: list[str] = []
    state = tmp_path / "state"
    with pytest.raises((ClusterError, RuntimeError), match="kube-scheduler"):
        controlplane.up(state, bin_dir=bins, progress=said.append)
    assert sum("starting again" in line for line in said) == 1
    procs = processes.load(state / "processes.json")
    assert {"etcd", "kube-apiserver"} <= {p.name for p in procs}
    assert not any(processes.is_alive(p) for p in procs)
    assert "address already in use" in (state / "logs" / "kube-scheduler.log").read_text()
    controlplane.down(state)
    assert not state.exists()
