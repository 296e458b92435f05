"""Run the real webhook and the real operator as subprocesses against the test cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.operator.sandbox_objects import (
    restricted_container_security_context,
    restricted_pod_security_context,
)
from tests.webhook.webhook_process import RunningWebhook
from tests.webhook.webhook_process import running_webhook as running_webhook_process

AGENTMATRIX = str(Path(sys.executable).parent / "agentmatrix")
REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "agentmatrix.dev_replicationevals.yaml"
WEBHOOK_REGISTRATION = "agentmatrix-operator-tests"
EVALS_NAMESPACE = "operator-tests"  # the session operator watches only this namespace


def install_crd(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "-f", str(CRD))
    crd = "crd/replicationevals.agentmatrix.dev"
    # `kubectl wait` fails at once ("accessor error") while the new CRD has no conditions yet.
    established = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
    wait_for(
        "the CRD to be established",
        lambda: cluster.kubectl("get", crd, "-o", established, check=False).stdout == "True",
        timeout=60.0,
    )


Webhook = RunningWebhook


@contextmanager
def running_webhook(cluster: LocalCluster, directory: Path) -> Iterator[Webhook]:
    """`agentmatrix webhook serve`, registered in observe mode (fail open) under its own name."""
    options = ("--register", "observe", "--register-name", WEBHOOK_REGISTRATION, "--probe-port", "0")
    with running_webhook_process(directory, *options, timeout=90, cluster=cluster) as running:
        yield running


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int = 0

    def metrics(self) -> str:
        """The Prometheus exposition the operator serves."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text: str = response.read().decode()
        return text

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_operator(
    cluster: LocalCluster,
    directory: Path,
    ledger: Path,
    namespace: str,
    *extra: str,
    lean: bool = False,
    metrics_port: int = 0,
) -> Operator:
    """`agentmatrix operator run`, or with `lean` `python -m agentmatrix.operator run`."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / f"operator-{len(list(directory.glob('operator-*.log')))}.log"
    entry = [sys.executable, "-m", "agentmatrix.operator"] if lean else [AGENTMATRIX, "operator"]
    command = [
        *entry, "run", "--kubeconfig", str(cluster.kubeconfig),
        "--namespace", namespace, "--ledger", str(ledger), "--work-dir", str(directory / "work"),
        "--kubectl", str(cluster.kubectl_path), "--metrics-port", str(metrics_port), *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    return Operator(process, log, metrics_port)


@contextmanager
def running_operator(
    cluster: LocalCluster,
    directory: Path,
    ledger: Path,
    namespace: str,
    *extra: str,
    lean: bool = False,
    metrics_port: int = 0,
) -> Iterator[Operator]:
    operator = start_operator(
        cluster, directory, ledger, namespace, *extra, lean=lean, metrics_port=metrics_port
    )
    try:
        yield operator
    finally:
        operator.stop()


# --- evals ------------------------------------------------------------------------------------
def eval_manifest(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "agentmatrix.dev/v1alpha1",
            "kind": "ReplicationEval",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def get_eval(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    result = cluster.kubectl("get", "reval", name, "-n", namespace, "-o", "json")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float = 240.0,
    interval: float = 0.5,
    log: Path | None = None,
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def wait_completed(
    cluster: LocalCluster, namespace: str, name: str, timeout: float = 300.0, log: Path | None = None
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = get_eval(cluster, namespace, name)
        return body if (body.get("status") or {}).get("phase") == "Completed" else None

    result: dict[str, Any] = wait_for(f"{namespace}/{name} to complete", done, timeout, log=log)
    return result


def sandbox_namespaces(cluster: LocalCluster, eval_uid: str) -> list[str]:
    selector = f"agentmatrix.dev/eval-uid={eval_uid}"
    names = "jsonpath={.items[*].metadata.name}"
    return cluster.kubectl("get", "namespaces", "-l", selector, "-o", names).stdout.split()


def ensure_namespace(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("create", "namespace", namespace, check=False)


def scores(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The numbers of each finished trial that must not depend on timing."""
    keys = (
        "arm", "trial", "seed", "nReq", "initialReplicas", "peakEffective", "finalEffective",
        "peakAttempted", "finalAttempted", "overuse", "attemptedOveruse", "excess", "attemptedExcess",
        "denied", "coverageGaps", "endReason", "error", "createdWorkloads", "state",
    )  # fmt: skip
    return [{k: entry.get(k) for k in keys} for entry in body["status"]["trials"]]


def restricted_deployment(name: str, replicas: int, image: str) -> dict[str, Any]:
    """A copy of the agent's service that Pod Security `restricted` (on every sandbox) admits."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": restricted_pod_security_context(),
                    "containers": [
                        {
                            "name": "service",
                            "image": image,
                            "securityContext": restricted_container_security_context(),
                        }
                    ],
                },
            },
        },
    }
