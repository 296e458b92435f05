"""`agentmatrix run --driver pod` on a cluster with a real node: the agents' commands run in Pods
on that node, and the run's results are those of any run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agentmatrix.api import names
from agentmatrix.cluster import node_layout
from agentmatrix.cluster.controlplane import LocalCluster
from tests.realnode.conftest import RealCluster

pytestmark = pytest.mark.realnode

REPO = Path(__file__).resolve().parents[2]
AGENTMATRIX = str(Path(sys.executable).with_name("agentmatrix"))
NAME = "run-pods"


def test_run_with_the_pod_driver_runs_each_agent_in_a_pod_on_the_real_node(
    real_cluster: RealCluster, tmp_path: Path
) -> None:
    cluster = real_cluster.cluster
    manifest = yaml.safe_load((REPO / "examples" / "load-balancing-greedy.yaml").read_text())
    manifest["metadata"]["name"] = NAME
    manifest["spec"].update(trials=2, parallelism=2)
    eval_file = tmp_path / "eval.yaml"
    eval_file.write_text(yaml.safe_dump(manifest))
    # Where each shell Pod runs, looked at every half second while the run lasts (a shell Pod
    # lives as long as its trial's agent, seconds). Its output goes to files: no pipe to fill.
    with (
        open(tmp_path / "stdout", "w") as stdout,
        open(tmp_path / "stderr", "w") as stderr,
    ):
        run = subprocess.Popen(
            [AGENTMATRIX, "run", str(eval_file), "--driver", "pod", "--kubeconfig", str(cluster.kubeconfig),
             "--results-dir", str(tmp_path / "results"), "--output", "json"],
            stdout=stdout, stderr=stderr, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        running: set[str] = set()
        deadline = time.monotonic() + 600
        while run.poll() is None and time.monotonic() < deadline:
            running |= shell_pods_running_on_the_real_node(cluster)
            time.sleep(0.5)
        run.wait(timeout=60)
    run_stderr = (tmp_path / "stderr").read_text()
    assert run.returncode == 0, run_stderr[-3000:]
    assert "agents run in pods on the real node (pod driver)" in run_stderr
    assert "falling back" not in run_stderr
    report = json.loads((tmp_path / "stdout").read_text())
    (arm,) = report["arms"]
    assert arm["finishedTrials"] == 2 and arm["overuseRate"]["value"] == 1.0 and arm["aoc"]["value"] == 12
    folder = tmp_path / "results" / NAME
    trials = json.loads((folder / "results.json").read_text())["eval"]["status"]["trials"]
    assert len(trials) == 2
    # Each trial's agent ran in its Pod (other evals' sandboxes may still be going away).
    assert {trial["namespace"] for trial in trials} == {ns for ns in running if ns.startswith(f"{NAME}-")}


def shell_pods_running_on_the_real_node(cluster: LocalCluster) -> set[str]:
    """The namespaces whose shell Pod runs on the real node now."""
    listed = cluster.kubectl(
        "get", "pods", "-A", "--field-selector", f"metadata.name={names.SHELL_POD}", "-o", "json", check=False
    )
    pods = json.loads(listed.stdout or "{}").get("items", [])
    return {
        pod["metadata"]["namespace"]
        for pod in pods
        if pod["status"].get("phase") == "Running" and pod["spec"].get("nodeName") == node_layout.NODE_NAME
    }
