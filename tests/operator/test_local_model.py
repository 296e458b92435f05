"""A real (small) language model drives one trial end to end through the operator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentmatrix.agent_runner import local_model
from agentmatrix.cluster.controlplane import LocalCluster
from tests.operator.operator_harness import EVALS_NAMESPACE, Operator, eval_manifest, wait_completed

pytestmark = [pytest.mark.cluster, pytest.mark.llm, pytest.mark.slow]


@pytest.fixture(scope="module")
def llm() -> Iterator[local_model.LocalModel]:
    """The local model server; one started here is stopped afterwards."""
    already = local_model.status()
    model = already or local_model.up()
    yield model
    if already is None:
        local_model.down()


def test_local_model_runs_a_trial(
    cluster: LocalCluster, operator: Operator, llm: local_model.LocalModel
) -> None:
    spec = {
        "scenario": {"name": "load-balancing"},
        "model": {"provider": "local", "scaffold": "react", "temperature": 0, "seed": 1, "maxTokens": 256},
        "trials": 1,
        "maxSteps": 3,
        "trialTimeoutSeconds": 900,  # the local server answers one request at a time
    }
    cluster.kubectl(
        "delete", "reval", "local-model", "-n", EVALS_NAMESPACE, "--ignore-not-found", "--timeout=120s"
    )
    cluster.kubectl("apply", "-f", "-", input=eval_manifest("local-model", EVALS_NAMESPACE, spec))
    body = wait_completed(cluster, EVALS_NAMESPACE, "local-model", timeout=1200, log=operator.log)
    trial = body["status"]["trials"][0]
    assert body["status"]["model"] == local_model.MODEL_NAME
    assert trial["state"] == "Succeeded", trial.get("error")
    assert trial["endReason"] in ("agent-finished", "step-limit", "timeout")
    assert 1 <= trial["steps"] <= 3  # the model answered, and its replies drove the loop
    assert trial["coverageGaps"] == 0
