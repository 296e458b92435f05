"""The pod driver's objects and how it reads its shell Pod's state (the Pod statuses below are the
kubelet's own words for each case; `tests/realnode/test_pod_driver.py` makes them happen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmatrix.api import names
from agentmatrix.operator.drivers.pod_objects import (
    SERVICE_ACCOUNT_DIR,
    exec_access_objects,
    shell_exec_cluster_role,
    shell_pod,
    shell_uid,
    token_seconds,
)
from agentmatrix.operator.drivers.shell_failure import PENDING_LIMIT_SECONDS, shell_failure
from agentmatrix.operator.trial_outcome import NOT_RUN_END_REASONS, RUNNER_END_REASONS, end_of_run

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "base" / "rbac-operator.yaml"


def test_the_shell_pod_is_restricted_non_root_of_its_own_user_with_only_a_projected_token() -> None:
    pod = shell_pod("sandbox-a", "registry.local/agentmatrix/agent-runner:0.1.0", 300, real_node=True)
    spec = pod["spec"]
    (container,) = spec["containers"]
    uid = shell_uid("sandbox-a")
    assert spec["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"},
                                       "runAsUser": uid, "runAsGroup": uid}  # fmt: skip
    assert uid != shell_uid("sandbox-b") and uid > 65535
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
    }  # fmt: skip
    assert spec["serviceAccountName"] == "agent" and spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False and spec["restartPolicy"] == "Never"
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert container["command"][:3] == ["python3", "-IS", "-c"]  # idles; commands come by exec
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(volumes) == {"kube-api-access", "home", "tmp"}
    token = volumes["kube-api-access"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"path": "token", "expirationSeconds": token_seconds(300)}
    assert volumes["home"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "256Mi"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {SERVICE_ACCOUNT_DIR, names.SHELL_HOME, "/tmp"}
    assert mounts[SERVICE_ACCOUNT_DIR]["readOnly"] is True
    assert not [e for e in container["env"] if "valueFrom" in e]
    assert spec["nodeSelector"] == {"agentmatrix.dev/node": "real"}
    assert spec["tolerations"] == [
        {"key": "agentmatrix.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert "nodeSelector" not in shell_pod("sandbox-a", "image", 300, real_node=False)["spec"]


def test_the_token_outlasts_the_trial_before_the_kubelet_renews_it() -> None:
    assert token_seconds(60) == 600  # the API's minimum
    for limit in (600, 1800, 7200):
        assert 0.8 * token_seconds(limit) > limit


def test_the_runners_exec_identity_may_only_look_at_and_exec_into_the_shell_pod() -> None:
    account, binding = exec_access_objects("sandbox-a")
    assert account["metadata"]["name"] == names.SHELL_EXEC_SERVICE_ACCOUNT
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "agentmatrix-shell-exec"
    }  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "shell-exec", "namespace": "sandbox-a"}]
    only = {"apiGroups": [""], "resourceNames": ["agent-shell"]}
    assert shell_exec_cluster_role()["rules"] == [
        {**only, "resources": ["pods"], "verbs": ["get"]},
        {**only, "resources": ["pods/exec"], "verbs": ["get", "create"]},
    ]


def test_deploy_ships_the_same_shell_exec_role_and_the_operator_may_only_bind_it() -> None:
    documents = list(yaml.safe_load_all(RBAC.read_text()))
    (shipped,) = [d for d in documents if d["metadata"]["name"] == "agentmatrix-shell-exec"]
    assert shipped["rules"] == shell_exec_cluster_role()["rules"]
    (operator_role,) = [
        d for d in documents if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "agentmatrix-operator"
    ]
    bind = {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
            "resourceNames": ["agentmatrix-shell-exec"], "verbs": ["get", "bind"]}  # fmt: skip
    assert bind in operator_role["rules"]
    assert not [rule for rule in operator_role["rules"] if "pods/exec" in rule["resources"]]


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"status": {"phase": "Pending", "containerStatuses": [
        {"name": "shell", "state": {"waiting": {"reason": reason, "message": message}}}]}}  # fmt: skip


def terminated(reason: str, code: int, phase: str = "Failed") -> dict[str, Any]:
    return {"status": {"phase": phase, "containerStatuses": [
        {"name": "shell", "state": {"terminated": {"reason": reason, "exitCode": code}}}]}}  # fmt: skip


RUNNING = {"status": {"phase": "Running", "containerStatuses": [{"name": "shell", "state": {"running": {}}}]}}
UNSCHEDULABLE = {"status": {"phase": "Pending", "conditions": [
    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
     "message": "0/3 nodes are available: 1 Insufficient cpu."}]}}  # fmt: skip


@pytest.mark.parametrize(
    ("pod", "pending", "reason", "words"),
    [
        (None, 0, "pod_deleted", "was deleted"),
        ({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, **RUNNING}, 0, "pod_deleted", "deleted"),
        ({"status": {"phase": "Failed", "reason": "Evicted", "message": "The node was low on memory."}},
         0, "pod_evicted", "low on memory"),
        (terminated("OOMKilled", 137), 0, "pod_oom_killed", "OOM-killed"),
        (terminated("Error", 1), 0, "pod_failed", "ended: Error"),
        (waiting("ErrImagePull", 'failed to pull "x"'), 0, "pod_image_unavailable", "ErrImagePull: failed"),
        (waiting("ImagePullBackOff"), 0, "pod_image_unavailable", "ImagePullBackOff"),
        (waiting("CreateContainerConfigError", "no secret"), 0, "pod_start_failed", "no secret"),
        (UNSCHEDULABLE, PENDING_LIMIT_SECONDS + 1, "pod_pending", "Unschedulable: 0/3 nodes"),
    ],
)  # fmt: skip
def test_a_shell_pod_that_cannot_run_commands_ends_the_run_with_its_reason(
    pod: dict[str, Any] | None, pending: float, reason: str, words: str
) -> None:
    failure = shell_failure(pod, pending)
    assert failure is not None and failure.reason == reason and words in failure.message
    api_reason, error = end_of_run(False, {"end_reason": failure.reason, "message": failure.message})
    assert api_reason == RUNNER_END_REASONS[reason] == reason.replace("_", "-")
    assert (error is not None) is (reason in NOT_RUN_END_REASONS)


def test_a_running_or_starting_shell_pod_is_left_alone() -> None:
    assert shell_failure(RUNNING, 1000) is None
    assert shell_failure(waiting("ContainerCreating"), 10) is None
    assert shell_failure(UNSCHEDULABLE, PENDING_LIMIT_SECONDS - 1) is None


def test_only_the_pods_that_never_ran_the_agent_are_errors() -> None:
    ran = {"pod_deleted", "pod_evicted", "pod_oom_killed"}
    never = {"pod_failed", "pod_image_unavailable", "pod_start_failed", "pod_pending"}
    assert ran.isdisjoint(NOT_RUN_END_REASONS) and never <= NOT_RUN_END_REASONS
