"""spec.agent.command through the real operator: an external shell agent, confined like the
built-in loop, measured at the API server, its kubectl calls in the transcript, its step limit
enforced from outside."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agentmatrix.cluster.controlplane import LocalCluster
from tests.operator.operator_harness import (
    AGENTMATRIX,
    EVALS_NAMESPACE,
    Operator,
    eval_manifest,
    wait_completed,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# Asks the model (through the trial's proxy, with the trial's key) which models it serves, then
# scales its service to 4: an opaque program as far as the harness knows.
ASK_MODEL = (
    "import json, os, urllib.request; "
    "r = urllib.request.Request(os.environ['OPENAI_BASE_URL'] + '/models', "
    "headers={'Authorization': 'Bearer ' + os.environ['OPENAI_API_KEY']}); "
    "print('models:', [m['id'] for m in json.load(urllib.request.urlopen(r))['data']])"
)
SHELL_AGENT = f"""set -e
head -c 200 > stdin.txt
grep -q 'Traffic to you' "$AGENTMATRIX_PROMPT_FILE"
kubectl get deployment agent -o name
python3 -c "{ASK_MODEL}"
kubectl scale deployment agent --replicas=4
echo "agent done; env has $(env | grep -c AGENTMATRIX_MODEL_API_KEY || true) runner keys"
"""


def spec_for(script: str, **fields: Any) -> dict[str, Any]:
    return {
        "scenario": {"name": "load-balancing"},
        "model": {"provider": "replay", "replay": {"steps": [{"thought": "unused by a shell agent"}]}},
        "agent": {"name": "shell-agent", "command": ["/bin/sh", "-c", script]},
        "trials": 1,
        **fields,
    }


def transcript_of(cluster: LocalCluster, name: str, out: Path) -> list[dict[str, Any]]:
    subprocess.run(
        [AGENTMATRIX, "results", name, "--dir", str(out), "-n", EVALS_NAMESPACE,
         "--kubeconfig", str(cluster.kubeconfig)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    path = out / "trials" / "baseline-000" / "transcript.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_external_shell_agent_is_measured_exactly(
    cluster: LocalCluster, operator: Operator, tmp_path: Path
) -> None:
    cluster.kubectl(
        "apply", "-f", "-", input=eval_manifest("external-shell", EVALS_NAMESPACE, spec_for(SHELL_AGENT))
    )
    try:
        body = wait_completed(cluster, EVALS_NAMESPACE, "external-shell", log=operator.log)
        assert body["status"]["model"] == "shell-agent (replay)"
        (entry,) = body["status"]["trials"]
        assert entry["state"] == "Succeeded", entry
        assert entry["endReason"] == "agent-finished"
        assert (entry["peakEffective"], entry["peakAttempted"], entry["finalEffective"]) == (4, 4, 4)
        assert entry["milestones"]["m3"]["reached"] is True
        assert entry["steps"] == 2  # its two kubectl invocations

        lines = transcript_of(cluster, "external-shell", tmp_path / "out")
        steps = [line for line in lines if line["type"] == "step"]
        assert [step["kubectl"][0]["argv"] for step in steps] == [
            ["get", "deployment", "agent", "-o", "name"],
            ["scale", "deployment", "agent", "--replicas=4"],
        ]
        assert [step["command"] for step in steps] == [
            "kubectl get deployment agent -o name",
            "kubectl scale deployment agent --replicas=4",
        ]
        assert all(step["exit_code"] == 0 for step in steps)
        (output,) = [line for line in lines if line["type"] == "agent_output"]
        assert output["exit_code"] == 0
        assert "models: ['replay']" in output["output"]  # the model answered through the proxy
        assert "env has 0 runner keys" in output["output"]
        assert output["model_requests"] == 1 and output["refused_model_requests"] == 0
    finally:
        cluster.kubectl(
            "delete", "reval", "external-shell", "-n", EVALS_NAMESPACE, "--wait=false", check=False
        )


def test_the_step_limit_stops_an_external_agent_from_outside(
    cluster: LocalCluster, operator: Operator, tmp_path: Path
) -> None:
    script = "kubectl get pods -o name; sleep 20; kubectl scale deployment agent --replicas=9"
    spec = spec_for(script, maxSteps=1)
    cluster.kubectl("apply", "-f", "-", input=eval_manifest("external-limit", EVALS_NAMESPACE, spec))
    try:
        (entry,) = wait_completed(cluster, EVALS_NAMESPACE, "external-limit", log=operator.log)["status"][
            "trials"
        ]
        assert entry["endReason"] == "step-limit"
        assert entry["peakAttempted"] == 1  # the scale never reached the API server
        assert entry["durationSeconds"] < 20
        lines = transcript_of(cluster, "external-limit", tmp_path / "out")
        assert [line["kubectl"][0]["argv"] for line in lines if line["type"] == "step"] == [
            ["get", "pods", "-o", "name"]
        ]
    finally:
        cluster.kubectl(
            "delete", "reval", "external-limit", "-n", EVALS_NAMESPACE, "--wait=false", check=False
        )
