"""The pod driver for real: each trial's commands run by exec in a restricted shell Pod on the real
node, the runner (and the model's key) stay with the operator, and a shell Pod that cannot run, or
stops running, ends the trial with its reason.

Real control plane and node, real webhook and operator (`--driver pod`), a replay model served on
the operator's host behind an API key, evals applied with kubectl."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmatrix.agent_runner.replay import ReplayServer, parse_steps
from agentmatrix.api import names
from agentmatrix.cluster import controlplane, images, node_layout, processes
from agentmatrix.operator.drivers.pod_objects import shell_uid
from tests.operator.operator_harness import (
    AGENTMATRIX,
    Operator,
    Webhook,
    ensure_namespace,
    eval_manifest,
    get_eval,
    install_crd,
    running_operator,
    running_webhook,
    start_operator,
    wait_completed,
    wait_for,
)
from tests.realnode.conftest import RealCluster

pytestmark = pytest.mark.realnode

EVALS = "pod-driver-tests"
MISSING_IMAGE = "pod-driver-missing-image"
RESTART = "pod-driver-restart"
KEY = "pod-driver-model-key-3c9e51b07a64"
LOOK = {"command": "kubectl get configmap service-metrics -o yaml", "thought": "How loaded is it?"}
SCALE = {"command": "kubectl scale deployment agent --replicas=3", "thought": "Three is enough."}
DONE = {"thought": "Done."}


POD_DRIVER = ("--driver", "pod", "--driver-image", images.RUNNER_IMAGE)


@pytest.fixture(scope="module")
def webhook(real_cluster: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    install_crd(real_cluster.cluster)
    with running_webhook(real_cluster.cluster, tmp_path_factory.mktemp("webhook")) as running:
        yield running


@pytest.fixture(scope="module")
def operator(
    real_cluster: RealCluster, webhook: Webhook, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    cluster = real_cluster.cluster
    ensure_namespace(cluster, EVALS)
    cluster.kubectl("delete", "secret", "model", "-n", EVALS, "--ignore-not-found")
    cluster.kubectl("create", "secret", "generic", "model", "-n", EVALS, f"--from-literal=apiKey={KEY}")
    directory = tmp_path_factory.mktemp("operator")
    with running_operator(
        cluster, directory, webhook.ledger, EVALS, "--keep-sandboxes", *POD_DRIVER
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def no_sandboxes_left(real_cluster: RealCluster) -> Iterator[None]:
    """Each test's sandboxes (kept for its checks) are deleted after it: their pods hold the real
    node's CPU, and a later shell Pod would stay Pending (`pod-pending`) for want of it."""
    yield
    for evals in (EVALS, MISSING_IMAGE, RESTART):
        selector = f"{names.LABEL_SANDBOX}=true,{names.LABEL_EVAL_NAMESPACE}={evals}"
        real_cluster.cluster.kubectl("delete", "namespace", "-l", selector, "--timeout=120s", check=False)


def run_eval(
    cluster: controlplane.LocalCluster, operator: Operator, name: str, steps: list[dict[str, str]], out: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One load-balancing trial whose model (served here, behind KEY) plays `steps`: its status
    entry and its transcript's steps, as `agentmatrix results` writes them."""
    server = ReplayServer(parse_steps(steps))
    server.api_key = KEY  # the runner must present it: it really holds the key
    with server:
        model = {"provider": "openai", "endpoint": server.base_url, "name": server.model,
                 "apiKeySecretRef": {"name": "model", "key": "apiKey"}}  # fmt: skip
        spec = {"scenario": {"name": "load-balancing"}, "model": model, "trials": 1}
        cluster.kubectl("delete", "reval", name, "-n", EVALS, "--ignore-not-found", "--timeout=120s")
        cluster.kubectl("apply", "-f", "-", input=eval_manifest(name, EVALS, spec))
        body = wait_completed(cluster, EVALS, name, timeout=300, log=operator.log)
    subprocess.run(
        [AGENTMATRIX, "results", name, "--dir", str(out), "-n", EVALS,
         "--kubeconfig", str(cluster.kubeconfig)], check=True, capture_output=True, text=True,
    )  # fmt: skip
    (entry,) = body["status"]["trials"]
    lines = (out / "trials" / "baseline-000" / "transcript.jsonl").read_text().splitlines()
    return entry, [step for step in map(json.loads, lines) if step["type"] == "step"]


def output_of(steps: list[dict[str, Any]], command_part: str) -> str:
    return str(next(step["output"] for step in steps if command_part in (step.get("command") or "")))


def test_a_replay_eval_runs_in_a_restricted_shell_pod_that_holds_no_model_key(
    real_cluster: RealCluster, operator: Operator, tmp_path: Path
) -> None:
    cluster = real_cluster.cluster
    steps = [
        LOOK,
        SCALE,
        {"command": "kubectl auth whoami -o jsonpath='{.status.userInfo.username}'"},
        {"command": "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | cut -d= -f1 | sort -u"},
        {"command": f"echo found=$(grep -rsl {KEY[:20]} /proc/*/environ /home /tmp /etc /var/run | wc -l)"},
        DONE,
    ]
    entry, transcript = run_eval(cluster, operator, "shell", steps, tmp_path)
    namespace = entry["namespace"]
    assert (entry["state"], entry["endReason"], entry.get("error")) == ("Succeeded", "agent-finished", None)
    assert entry["peakEffective"] == entry["peakAttempted"] == 3  # measured at the API server
    look = transcript[0]
    assert look["exit_code"] == 0 and "servingInstances" in look["output"]
    assert [call["argv"] for call in look["kubectl"]] == [
        ["get", "configmap", "service-metrics", "-o", "yaml"]
    ]
    # kubectl in the Pod acts as the agent's ServiceAccount, by its projected token.
    assert output_of(transcript, "whoami") == f"system:serviceaccount:{namespace}:agent"
    environment = set(output_of(transcript, "environ").split())
    assert "AGENTMATRIX_MODEL_API_KEY" not in environment and not {n for n in environment if "KEY" in n}
    assert output_of(transcript, "found=").strip() == "found=0"  # the key is nowhere in the Pod

    pod = json.loads(cluster.kubectl("get", "pod", "agent-shell", "-n", namespace, "-o", "json").stdout)
    spec = pod["spec"]
    assert spec["nodeName"] == node_layout.NODE_NAME and spec["automountServiceAccountToken"] is False
    assert not [volume for volume in spec["volumes"] if "secret" in volume]
    assert "secretKeyRef" not in json.dumps(spec["containers"])
    labels = json.loads(cluster.kubectl("get", "namespace", namespace, "-o", "json").stdout)["metadata"][
        "labels"
    ]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert cluster.kubectl("get", "secrets", "-n", namespace, "-o", "name").stdout.strip() == ""
    # The user's own tools work on the agent's Pod (kept with the sandbox by --keep-sandboxes).
    log = cluster.kubectl("logs", "agent-shell", "-n", namespace).stdout
    assert "agentmatrix shell" in log and "$ kubectl scale deployment agent --replicas=3" in log
    inside = cluster.kubectl("exec", "agent-shell", "-n", namespace, "--", "id", "-u").stdout
    assert inside.strip() == str(shell_uid(namespace))


def test_a_command_past_the_memory_limit_ends_the_trial_memory_limit(
    real_cluster: RealCluster, operator: Operator, tmp_path: Path
) -> None:
    hog = "python3 -c \"b = b'x' * (600 << 20)\""  # half the 1 GiB a process may have, and more
    steps = [LOOK, SCALE, {"command": hog}, {"command": "echo not reached"}, DONE]
    entry, transcript = run_eval(real_cluster.cluster, operator, "memory", steps, tmp_path)
    assert (entry["state"], entry["endReason"]) == ("Succeeded", "memory-limit"), entry
    assert entry["peakEffective"] == 3
    assert (transcript[-1]["command"], transcript[-1]["limit"]) == (hog, "memory_limit")


def test_filling_the_home_ends_the_trial_disk_limit(
    real_cluster: RealCluster, operator: Operator, tmp_path: Path
) -> None:
    """The home is a memory-backed volume the size of the disk limit (a tmpfs of 256 MiB)."""
    fill = "df -k /home/agent; dd if=/dev/zero of=fill bs=1M count=300"
    steps = [LOOK, SCALE, {"command": fill}, {"command": "echo not reached"}, DONE]
    entry, transcript = run_eval(real_cluster.cluster, operator, "disk", steps, tmp_path)
    assert (entry["state"], entry["endReason"]) == ("Succeeded", "disk-limit"), entry
    assert (transcript[-1]["command"], transcript[-1]["limit"]) == (fill, "disk_limit")
    assert "262144" in transcript[-1]["output"] and "No space left on device" in transcript[-1]["output"]


def test_an_agent_that_deletes_its_shell_pod_ends_the_trial_pod_deleted(
    real_cluster: RealCluster, operator: Operator, tmp_path: Path
) -> None:
    cluster = real_cluster.cluster
    delete = "kubectl delete pod agent-shell --wait=false; sleep 60"
    steps = [LOOK, SCALE, {"command": delete}, {"command": "echo not reached"}, DONE]
    entry, transcript = run_eval(cluster, operator, "deleted", steps, tmp_path)
    assert (entry["state"], entry["endReason"], entry.get("error")) == ("Succeeded", "pod-deleted", None)
    assert entry["peakEffective"] == 3 and entry["durationSeconds"] < 60  # not the sleep's 60 s
    # The runner was stopped during that command, before it could record it.
    assert transcript[-1]["command"] == SCALE["command"]
    gone = cluster.kubectl("get", "pod", "agent-shell", "-n", entry["namespace"], check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_a_shell_image_that_does_not_exist_ends_the_trial_at_once_naming_it(
    real_cluster: RealCluster, operator: Operator, tmp_path: Path
) -> None:
    cluster = real_cluster.cluster
    namespace = MISSING_IMAGE
    ensure_namespace(cluster, namespace)
    missing = "registry.local/agentmatrix/no-such-image:0"
    spec = {
        "scenario": {"name": "load-balancing"},
        "model": {"provider": "replay", "replay": {"steps": [LOOK]}},
        "trials": 1,
    }
    with running_operator(
        cluster,
        tmp_path,
        tmp_path / "ledger.sqlite3",
        namespace,
        "--driver",
        "pod",
        "--driver-image",
        missing,
    ) as missing_operator:
        cluster.kubectl("apply", "-f", "-", input=eval_manifest("missing", namespace, spec))
        (entry,) = wait_completed(cluster, namespace, "missing", timeout=180, log=missing_operator.log)[
            "status"
        ]["trials"]
    assert (entry["state"], entry["endReason"]) == ("Failed", "pod-image-unavailable"), entry
    assert missing in entry["error"]
    assert "ErrImagePull" in entry["error"] or "ImagePullBackOff" in entry["error"]
    assert entry["durationSeconds"] < 60


def test_after_an_operator_restart_the_cut_off_runner_is_stopped_and_the_trial_reruns(
    real_cluster: RealCluster, webhook: Webhook, tmp_path: Path
) -> None:
    """The namespace annotation names the runner (and its shell Pod); the restarted operator stops
    that runner by pid, deletes the cut-off sandbox with its Pod, and runs the trial again."""
    cluster = real_cluster.cluster
    namespace = RESTART
    ensure_namespace(cluster, namespace)
    steps = [LOOK, {"command": "sleep 40"}, SCALE, DONE]
    spec = {
        "scenario": {"name": "load-balancing"},
        "model": {"provider": "replay", "replay": {"steps": steps}},
        "trials": 1,
    }
    first = start_operator(cluster, tmp_path, webhook.ledger, namespace, *POD_DRIVER)
    try:
        cluster.kubectl("apply", "-f", "-", input=eval_manifest("restarted", namespace, spec))

        def sleeping() -> tuple[str, dict[str, Any]] | None:
            trials = (get_eval(cluster, namespace, "restarted").get("status") or {}).get("trials") or []
            if not trials:
                return None
            sandbox = trials[0]["namespace"]
            found = cluster.kubectl("get", "namespace", sandbox, "-o", "json", check=False)
            record = json.loads(found.stdout or "{}").get("metadata", {}).get("annotations", {})
            driver = record.get("agentmatrix.dev/driver")
            log = cluster.kubectl("logs", "agent-shell", "-n", sandbox, check=False).stdout
            return (sandbox, json.loads(driver)) if driver and "$ sleep 40" in log else None

        cut_off, driver = wait_for("the agent's second command", sleeping, timeout=120, log=first.log)
    finally:
        first.kill()
    assert driver["shellPod"] == "agent-shell" and driver["kind"] == "process"
    with running_operator(cluster, tmp_path, webhook.ledger, namespace, *POD_DRIVER) as second:
        body = wait_completed(cluster, namespace, "restarted", timeout=240, log=second.log)
    (entry,) = body["status"]["trials"]
    assert (entry["state"], entry["attempt"], entry["endReason"]) == ("Succeeded", 1, "agent-finished")
    assert entry["namespace"] != cut_off and entry["peakEffective"] == 3
    runner = processes.RecordedProcess("driver", int(driver["pid"]), int(driver["startTicks"]), ())
    assert not processes.is_alive(runner)  # stopped by the second operator, by pid and start time
    gone = cluster.kubectl("get", "pod", "agent-shell", "-n", cut_off, "-o", "name", check=False)
    assert gone.returncode != 0 or "Terminating" in cluster.kubectl("get", "ns", cut_off, check=False).stdout
