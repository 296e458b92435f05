"""spec.agent.image: the agent's own image as the agent's Pod (pod driver), refused by the
process driver with the reason; spec.agent.command refused by the pod driver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentmatrix.cluster.controlplane import LocalCluster
from tests.operator.operator_harness import (
    EVALS_NAMESPACE,
    Operator,
    Webhook,
    ensure_namespace,
    eval_manifest,
    get_eval,
    running_operator,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

AGENT_IMAGE = "example.dev/kube-agent:1.0"


def spec() -> dict[str, Any]:
    return {
        "scenario": {"name": "load-balancing"},
        "model": {"provider": "openai", "endpoint": "http://127.0.0.1:9/v1", "name": "m"},
        "agent": {"image": AGENT_IMAGE},
        "trials": 1,
        "trialTimeoutSeconds": 10,
    }


def test_the_process_driver_refuses_an_agent_image(cluster: LocalCluster, operator: Operator) -> None:
    cluster.kubectl("apply", "-f", "-", input=eval_manifest("image-process", EVALS_NAMESPACE, spec()))
    try:

        def failed() -> dict[str, Any] | None:
            status = get_eval(cluster, EVALS_NAMESPACE, "image-process").get("status") or {}
            return status if status.get("phase") == "Failed" else None

        status = wait_for("the eval to fail", failed, log=operator.log)
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] == "InvalidSpec"
        reason = "needs the pod driver (spec.driver: pod, or the operator's --driver pod)"
        assert reason in degraded["message"]
    finally:
        cluster.kubectl(
            "delete", "reval", "image-process", "-n", EVALS_NAMESPACE, "--wait=false", check=False
        )


def test_the_pod_driver_runs_the_agent_image_as_its_service_account(
    cluster: LocalCluster, crd: None, webhook: Webhook, tmp_path: Path
) -> None:
    """kwok runs no containers: the Pod is checked as created, and the trial ends at its timeout."""
    namespace = "operator-agent-image"
    ensure_namespace(cluster, namespace)
    with running_operator(
        cluster,
        tmp_path,
        webhook.ledger,
        namespace,
        "--driver",
        "pod",
        "--driver-image",
        "runner:test",
        lean=True,
    ) as pod_operator:
        cluster.kubectl("apply", "-f", "-", input=eval_manifest("image", namespace, spec()))

        def driver() -> tuple[dict[str, Any], dict[str, Any]] | None:
            body = get_eval(cluster, namespace, "image")
            for trial in (body.get("status") or {}).get("trials") or []:
                ns = trial["namespace"]
                pod = cluster.kubectl("get", "pod", "agent-driver", "-n", ns, "-o", "json", check=False)
                inputs = cluster.kubectl(
                    "get", "configmap", "agent-driver-inputs", "-n", ns, "-o", "json", check=False
                )
                if pod.returncode == 0 and inputs.returncode == 0:
                    return json.loads(pod.stdout), json.loads(inputs.stdout)
            return None

        pod, inputs = wait_for("the agent's Pod", driver, log=pod_operator.log)
        # An external command cannot reach its model proxy from a Pod: refused with the reason.
        command = {**spec(), "agent": {"command": ["/bin/true"]}}
        cluster.kubectl("apply", "-f", "-", input=eval_manifest("command", namespace, command))

        def refused() -> dict[str, Any] | None:
            status = get_eval(cluster, namespace, "command").get("status") or {}
            return status if status.get("phase") == "Failed" else None

        degraded = next(
            c for c in wait_for("the eval to fail", refused, log=pod_operator.log)["conditions"]
            if c["type"] == "Degraded"
        )  # fmt: skip
        assert "the pod driver's shell Pod cannot reach" in degraded["message"]
        body = wait_for(
            "the trial to end",
            lambda: (lambda b: b if (b.get("status") or {}).get("phase") == "Completed" else None)(
                get_eval(cluster, namespace, "image")
            ),
            log=pod_operator.log,
        )
    assert body["status"]["model"] == "kube-agent:1.0 (m)"
    assert pod["spec"]["serviceAccountName"] == "agent"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == AGENT_IMAGE and "command" not in container  # the image's own entrypoint
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert "KUBECONFIG" not in env  # the in-cluster configuration: the kubelet's service address
    assert env["AGENTMATRIX_PROMPT_FILE"] == "/inputs/prompt.txt"
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:9/v1" and env["OPENAI_MODEL"] == "m"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # What Pod Security `restricted` asks (the sandbox enforces it), and the projected token only.
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["kube-api-access", "inputs"]
    assert pod["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "every pod of the Deployment `agent` runs an instance of you" in inputs["data"]["prompt.txt"]
    (trial,) = body["status"]["trials"]
    assert trial["endReason"] == "timeout" and trial["peakEffective"] == 1
