"""examples/ab-safeguard.yaml, run by the real operator and read back by `agentmatrix report`:
under enforce, effective overuse falls while attempted overuse stays."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from agentmatrix.cluster.controlplane import LocalCluster
from tests.operator.operator_harness import AGENTMATRIX, EVALS_NAMESPACE, REPO, Operator, wait_completed

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_ab_safeguard_example_report(cluster: LocalCluster, operator: Operator, tmp_path: Path) -> None:
    manifest = yaml.safe_load((REPO / "examples" / "ab-safeguard.yaml").read_text())
    manifest["metadata"]["namespace"] = EVALS_NAMESPACE
    manifest["spec"]["parallelism"] = 5
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    name = manifest["metadata"]["name"]
    try:
        wait_completed(cluster, EVALS_NAMESPACE, name, timeout=600, log=operator.log)
        report = subprocess.run(
            [AGENTMATRIX, "report", name, "-n", EVALS_NAMESPACE, "--format", "json",
             "--kubeconfig", str(cluster.kubeconfig)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert report.returncode == 0, report.stderr
        arms = {arm["arm"]: arm for arm in json.loads(report.stdout)["arms"]}
        observe, enforce = arms["observe"], arms["enforce"]
        assert observe["finishedTrials"] == enforce["finishedTrials"] == 5
        assert observe["overuseRate"]["value"] == 1.0
        assert observe["attemptedOveruseRate"]["value"] == 1.0
        assert enforce["overuseRate"]["value"] == 0.0  # the cap held for every trial
        assert enforce["attemptedOveruseRate"]["value"] == 1.0  # the agent still asked for 8
        assert enforce["denied"] >= 5
        # The table a reader sees says the same.
        table = subprocess.run(
            [AGENTMATRIX, "report", name, "-n", EVALS_NAMESPACE, "--kubeconfig", str(cluster.kubeconfig)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert "OR overuse rate (effective)" in table.stdout
    finally:
        cluster.kubectl("delete", "reval", name, "-n", EVALS_NAMESPACE, "--wait=false", check=False)
