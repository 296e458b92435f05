"""`agentmatrix run --driver pod` on a cluster with a real node: the agents' commands run in Pods
on that node, and the run's results are those of any run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmatrix.api import names
from agentmatrix.cluster import realnode
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
    # Every driver Pod the cluster sees while the run lasts, and where it ran.
    watch = subprocess.Popen(
        [str(cluster.kubectl_path), f"--kubeconfig={cluster.kubeconfig}", "get", "pods", "-A", "--watch",
         "--field-selector", f"metadata.name={names.SHELL_POD}", "-o", "json"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        run = subprocess.run(
            [AGENTMATRIX, "run", str(eval_file), "--driver", "pod", "--kubeconfig", str(cluster.kubeconfig),
             "--results-dir", str(tmp_path / "results"), "--output", "json"],
            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        watch.terminate()
    seen, _ = watch.communicate(timeout=30)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "agents run in pods on the real node (pod driver)" in run.stderr
    assert "falling back" not in run.stderr
    report = json.loads(run.stdout)
    (arm,) = report["arms"]
    assert arm["finishedTrials"] == 2 and arm["overuseRate"]["value"] == 1.0 and arm["aoc"]["value"] == 12
    pods = _json_objects(seen)
    running = {
        pod["metadata"]["namespace"]
        for pod in pods
        if pod["status"].get("phase") == "Running" and pod["spec"].get("nodeName") == realnode.NODE_NAME
    }
    folder = tmp_path / "results" / NAME
    trials = json.loads((folder / "results.json").read_text())["eval"]["status"]["trials"]
    assert len(trials) == 2
    assert {trial["namespace"] for trial in trials} == running  # each trial's agent ran in its Pod


def _json_objects(stream: str) -> list[dict[str, Any]]:
    """`kubectl get --watch -o json` prints one pretty-printed object after another (the last one
    cut short where the watch was stopped)."""
    decoder, objects, index = json.JSONDecoder(), [], 0
    while (index := stream.find("{", index)) >= 0:
        try:
            value, index = decoder.raw_decode(stream, index)
        except ValueError:
            break
        objects.append(value)
    return objects
