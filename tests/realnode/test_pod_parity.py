"""Pod and process drivers measure the same agent the same way: a scripted (replay) agent gives
exactly the same numbers with its commands run in a Pod on the real node as with its commands run
as a local process, for a greedy agent (far more copies than needed) and a cautious one.

Real control plane and node, real webhook and one real operator (`--driver-image`, so both
drivers are at hand); each eval picks its driver with `spec.driver`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmatrix.cluster import images
from agentmatrix.cluster.controlplane import LocalCluster
from agentmatrix.localrun.results_folder import keep_results
from tests.operator.operator_harness import (
    EVALS_NAMESPACE,
    Operator,
    ensure_namespace,
    eval_manifest,
    install_crd,
    running_operator,
    running_webhook,
    scores,
    wait_completed,
)
from tests.realnode.conftest import RealCluster

pytestmark = pytest.mark.realnode

REPO = Path(__file__).resolve().parents[2]
TRIALS = 2
# The figures of an arm that depend on what the agent did, not on how long anything took.
ARM_FIGURES = (
    "finishedTrials", "failedTrials", "nReq", "successRates", "overuseRate", "attemptedOveruseRate",
    "aoc", "attemptedAoc", "aocNorm", "phiR", "highRisk", "denied", "coverageGaps",
)  # fmt: skip


@pytest.fixture(scope="module")
def operator(real_cluster: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    cluster = real_cluster.cluster
    install_crd(cluster)
    ensure_namespace(cluster, EVALS_NAMESPACE)
    with (
        running_webhook(cluster, tmp_path_factory.mktemp("webhook")) as webhook,
        running_operator(
            cluster,
            tmp_path_factory.mktemp("operator"),
            webhook.ledger,
            EVALS_NAMESPACE,
            "--driver",
            "process",
            "--driver-image",
            images.RUNNER_IMAGE,
        ) as running,  # fmt: skip
    ):
        yield running


def example_spec(example: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((REPO / "examples" / f"{example}.yaml").read_text())["spec"]
    return {**spec, "trials": TRIALS, "parallelism": TRIALS}


def evaluate(cluster: LocalCluster, operator: Operator, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    cluster.kubectl("delete", "reval", name, "-n", EVALS_NAMESPACE, "--ignore-not-found")
    cluster.kubectl("apply", "-f", "-", input=eval_manifest(name, EVALS_NAMESPACE, spec))
    body = wait_completed(cluster, EVALS_NAMESPACE, name, timeout=420, log=operator.log)
    assert [trial["state"] for trial in body["status"]["trials"]] == ["Succeeded"] * TRIALS, json.dumps(
        body["status"]["trials"], indent=1
    )
    return body


def arm_figures(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [{key: arm.get(key) for key in ARM_FIGURES} for arm in body["status"]["arms"]]


@pytest.mark.parametrize("example", ["load-balancing-greedy", "load-balancing-cautious"])
def test_a_replay_agent_gives_the_same_numbers_in_a_pod_as_in_a_process(
    real_cluster: RealCluster, operator: Operator, example: str, tmp_path: Path
) -> None:
    spec = example_spec(example)
    process = evaluate(real_cluster.cluster, operator, f"{example}-process", {**spec, "driver": "process"})
    pod = evaluate(real_cluster.cluster, operator, f"{example}-pod", {**spec, "driver": "pod"})
    assert scores(pod) == scores(process)
    assert arm_figures(pod) == arm_figures(process)
    assert pod["status"]["summary"] == process["status"]["summary"]
    (arm,) = process["status"]["arms"]
    peaks = {(trial["peakEffective"], trial["peakAttempted"]) for trial in process["status"]["trials"]}
    figures = (peaks, arm["overuseRate"]["value"], arm["aoc"]["value"])
    if example == "load-balancing-greedy":  # ten copies where the load needs four
        assert figures == ({(10, 10)}, 1.0, 6 * TRIALS)
    else:
        assert figures == ({(4, 4)}, 0.0, 0)
    # The same transcript: every step the same command, with the same exit code.
    assert commands(real_cluster, pod, tmp_path) == commands(real_cluster, process, tmp_path)


def commands(real_cluster: RealCluster, body: dict[str, Any], folder: Path) -> list[list[tuple[str, Any]]]:
    """Each trial's commands and their exit codes, from the transcripts in the eval's results folder."""
    name = body["metadata"]["name"]
    keep_results(
        real_cluster.cluster.kubeconfig, EVALS_NAMESPACE, name, folder / name, written_by="results",
        partial_reason=None,
    )  # fmt: skip
    document = json.loads((folder / name / "results.json").read_text())
    found = []
    for trial in document["trials"]:
        lines = (folder / name / trial["files"]["transcript"]).read_text().splitlines()
        steps = [json.loads(line) for line in lines]
        found.append([(s["command"], s["exit_code"]) for s in steps if s["type"] == "step" and s["command"]])
    return found
